"""`make bench`: runs every benchmark in turn."""

from bench import inference, lenet_training, mnist_lenet, serving

BENCHMARKS = [mnist_lenet, lenet_training, inference, serving]

if __name__ == "__main__":
    for benchmark in BENCHMARKS:
        benchmark.main([])
