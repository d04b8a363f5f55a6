"""`make bench`: runs every benchmark in turn."""

from bench import mnist_lenet

BENCHMARKS = [mnist_lenet]

if __name__ == "__main__":
    for benchmark in BENCHMARKS:
        benchmark.main([])
