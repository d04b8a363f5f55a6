"""`make bench`: runs every benchmark in turn."""

from bench import fraud, gan, inference, lenet_training, mnist_layers, mnist_lenet, serving

# gan after mnist_lenet: it judges with the LeNet-5 that mnist_lenet trained (runs/bench/lenet5).
BENCHMARKS = [mnist_lenet, mnist_layers, lenet_training, inference, serving, gan, fraud]

if __name__ == "__main__":
    for benchmark in BENCHMARKS:
        benchmark.main([])
