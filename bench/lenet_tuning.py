"""What each training setting does to LeNet-5's speed on this machine, one change at a time.

    python -m bench.lenet_tuning [--epochs 3] [--runs 2]

Starting from a plain pipeline (`from_tensor_slices` -> batch, nothing else) and a plain compile,
each row adds or changes one thing: caching, prefetching, parallel and non-deterministic maps,
batching before the per-image work, XLA (`jit_compile`), `steps_per_execution`, the batch size.
TensorFlow's thread pools are fixed when it starts: compare invocations with `--intra-op N` /
`--inter-op N`. Images per second exclude the first epoch; median of `--runs`.
The winners are `apps.digit_ocr`'s defaults; `bench/README.md` keeps the table.
"""

import argparse
import os
import statistics

import numpy as np

from bench import SHARED_DATA, save_results
from bench.lenet_training import EpochTimer, images_per_second

EPOCHS = 3
RUNS = 2


def pipeline(arrays, batch_size, *, cache=False, prefetch=False, parallel=False,
             deterministic=True, batch_first=False):
    """The training input, built the way the row says; per-image work = cast, pad, scale."""
    import tensorflow as tf

    from pipelines.images import to_model_input

    images, labels = arrays
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if cache:
        data = data.cache()
    data = data.shuffle(10_000, seed=0)
    calls = tf.data.AUTOTUNE if parallel else None
    prepare = lambda x, y: (to_model_input(x), y)  # noqa: E731
    if batch_first:
        data = data.batch(batch_size).map(prepare, num_parallel_calls=calls,
                                          deterministic=deterministic)
    else:
        data = data.map(prepare, num_parallel_calls=calls, deterministic=deterministic)
        data = data.batch(batch_size)
    return data.prefetch(tf.data.AUTOTUNE) if prefetch else data


def train_speed(arrays, epochs, batch_size, jit_compile=False, steps_per_execution=1,
                **pipeline_options) -> float:
    import keras

    from apps import digit_ocr

    keras.utils.set_random_seed(0)
    model = digit_ocr.build_model("lenet5")
    model.compile(optimizer=keras.optimizers.AdamW(digit_ocr.LEARNING_RATE,
                                                   weight_decay=digit_ocr.WEIGHT_DECAY["lenet5"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    timer = EpochTimer()
    model.fit(pipeline(arrays, batch_size, **pipeline_options), epochs=epochs,
              callbacks=[timer], shuffle=False, verbose=0)
    return images_per_second(timer.seconds, len(arrays[0]))


BEST_PIPELINE = dict(cache=True, prefetch=True, parallel=True, deterministic=False,
                     batch_first=True)
VARIANTS = [  # (row, batch size, settings); each row changes one thing from the best pipeline
    ("plain: slices -> map -> batch", 128, {}),
    ("+ cache", 128, dict(cache=True)),
    ("+ prefetch(AUTOTUNE)", 128, dict(cache=True, prefetch=True)),
    ("+ parallel map (AUTOTUNE)", 128, dict(cache=True, prefetch=True, parallel=True)),
    ("+ deterministic=False", 128, dict(cache=True, prefetch=True, parallel=True,
                                        deterministic=False)),
    ("+ batch before map (vectorised)", 128, BEST_PIPELINE),
    ("+ jit_compile=True (XLA)", 128, dict(BEST_PIPELINE, jit_compile=True)),
    ("+ steps_per_execution=8", 128, dict(BEST_PIPELINE, steps_per_execution=8)),
    ("+ steps_per_execution=32", 128, dict(BEST_PIPELINE, steps_per_execution=32)),
    ("batch 64", 64, dict(BEST_PIPELINE, steps_per_execution=8)),
    ("batch 256", 256, dict(BEST_PIPELINE, steps_per_execution=8)),
]


def main(argv=None) -> dict:
    from apps import runner
    from pipelines import images

    parser = argparse.ArgumentParser(prog="python -m bench.lenet_tuning",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--intra-op", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--inter-op", type=int, default=0, help="0: TensorFlow's choice")
    parser.add_argument("--only", nargs="*", help="rows whose name contains one of these")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)

    mnist = SHARED_DATA / "mnist"
    dataset = images.load_mnist(mnist) if mnist.is_dir() else images.load_digits()
    frames = np.stack([x.numpy() for x, _ in dataset.train])
    labels = np.array([int(y) for _, y in dataset.train], dtype=np.int32)

    results = {}
    for row, batch_size, settings in VARIANTS:
        if args.only and not any(word in row for word in args.only):
            continue
        speeds = [train_speed((frames, labels), args.epochs, batch_size, **settings)
                  for _ in range(args.runs)]
        results[row] = {"batch_size": batch_size, "settings": settings,
                        "images_per_second": speeds, "median": statistics.median(speeds)}
        print(f"{row}: {statistics.median(speeds):,.0f} images/s", flush=True)

    plain = next(iter(results.values()))["median"]
    rows = [{"change": row, "images/s": f"{figures['median']:,.0f}",
             "spread": f"{min(figures['images_per_second']):,.0f}.."
                       f"{max(figures['images_per_second']):,.0f}",
             "vs plain": f"{figures['median'] / plain:.2f}x"}
            for row, figures in results.items()]
    print(f"\nLeNet-5 training speed by setting ({dataset.name}, {len(frames):,} images, "
          f"{os.cpu_count()} cores, median of {args.runs})")
    runner.print_table(rows)
    save_results("lenet_tuning", {"epochs": args.epochs, "runs": args.runs,
                                  "intra_op": args.intra_op, "inter_op": args.inter_op,
                                  "results": results})
    return results


if __name__ == "__main__":
    main()
