"""`make bench`: runs every benchmark in turn."""

from bench import mnist_lenet, serving

BENCHMARKS = [mnist_lenet, serving]

if __name__ == "__main__":
    for benchmark in BENCHMARKS:
        benchmark.main([])
