"""`make bench`: runs every benchmark in turn (hours on 2 cores; translation alone ~45 min)."""

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

if __name__ == "__main__":
    for benchmark, argv in BENCHMARKS:
        benchmark.main(argv)
