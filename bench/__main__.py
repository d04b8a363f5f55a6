"""`make bench`: runs every benchmark in turn (hours on 2 cores; translation alone ~45 min), or
the ones named. Each prints its table and saves its JSON in bench/results/; their own options
are in `python -m bench.<name> --help`."""

import argparse

from bench import (
    captioning,
    fraud,
    gan,
    inference,
    lenet_kernels,
    lenet_training,
    mnist_layers,
    mnist_lenet,
    scaling,
    serving,
    speech,
    transformer_speed,
    translation,
)

# gan after mnist_lenet: it judges with the LeNet-5 that mnist_lenet trained (runs/bench/lenet5).
BENCHMARKS = [
    (mnist_lenet, []), (mnist_layers, []), (lenet_training, []), (lenet_kernels, []),
    (scaling, []), (inference, []), (serving, []), (gan, []), (fraud, []), (translation, []),
    (translation, ["--model", "transformer"]), (transformer_speed, []), (captioning, []),
    (speech, []),
]


def name(benchmark) -> str:
    return benchmark.__name__.removeprefix("bench.")


def main(argv=None) -> None:
    names = list(dict.fromkeys(name(b) for b, _ in BENCHMARKS))
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("only", nargs="*", metavar="NAME",
                        help=f"run only these (in this order): {', '.join(names)}"
                             " (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(names))
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; choose from {', '.join(names)}")
    for benchmark, benchmark_argv in BENCHMARKS:
        if not args.only or name(benchmark) in args.only:
            benchmark.main(benchmark_argv)


if __name__ == "__main__":
    main()
