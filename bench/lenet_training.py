"""LeNet-5 training speed, side by side in one run: `apps.digit_ocr`'s own pipeline and model, the
same model through plain `model.fit` on numpy arrays, and the same network in PyTorch on the CPU.

    python -m bench.lenet_training [--runs 3] [--epochs 4] [--batch-size 128]

Same layers (classic LeNet-5: tanh, average pooling, C3's connection table), batch size,
optimizer (AdamW, cosine decay), epochs and data in memory (MNIST's 55,000 training digits from
../shared/data/mnist, else the embedded digits). Images per second count every epoch but the
first (tracing, compilation and warm-up); each figure is the median of `--runs` runs, with the
spread (min..max). Test accuracy is reported beside it so that speed is not bought with quality.
PyTorch (`pip install torch==2.13.0`, the CPU wheel) is a benchmark-only dependency; without it
that column is skipped.
"""

import argparse
import os
import statistics
import time

import keras
import numpy as np

from bench import SHARED_DATA, save_results

RUNS = 3
EPOCHS = 4
BATCH_SIZE = 128


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of each epoch in `seconds`."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def images_per_second(epoch_seconds: list[float], images: int) -> float:
    timed = epoch_seconds[1:] or epoch_seconds
    return images * len(timed) / sum(timed)


def load_data():
    from pipelines import images

    mnist = SHARED_DATA / "mnist"
    dataset = images.load_mnist(mnist) if mnist.is_dir() else images.load_digits()
    train_x, train_y = images.labelled_arrays(dataset.train)
    test_x, test_y = images.labelled_arrays(dataset.test)
    return dataset, (train_x, train_y), (test_x, test_y)


def keras_pipeline(dataset, test, epochs, batch_size, seed) -> tuple[float, float]:
    """(a) What `python -m apps.digit_ocr train` does: our tf.data pipeline, compile and
    `runner.fit` (one Keras fit per epoch, step-level backups for exact resume)."""
    import tempfile
    from pathlib import Path

    from apps import digit_ocr, runner
    from pipelines import images

    keras.utils.set_random_seed(seed)

    def epoch_batches(epoch):
        return images.batches(dataset.train, batch_size, shuffle=True, seed=seed + epoch)

    steps = int(epoch_batches(0).cardinality())
    model = digit_ocr.compile_model(digit_ocr.build_model("lenet5"), steps=epochs * steps)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as run_dir:
        runner.fit(model, epoch_batches, epochs, Path(run_dir), steps_per_epoch=steps,
                   callbacks=[timer], verbose=0)
    accuracy = float((model.predict(test[0], verbose=0).argmax(1) == test[1]).mean())
    return images_per_second(timer.seconds, int(dataset.train.cardinality())), accuracy


def keras_numpy(train, test, epochs, batch_size, seed) -> tuple[float, float]:
    """(b) The same model and optimizer through plain `model.fit(x, y)` on numpy arrays."""
    from apps import digit_ocr

    keras.utils.set_random_seed(seed)
    steps = -(-len(train[0]) // batch_size)
    model = digit_ocr.build_model("lenet5")
    model.compile(
        optimizer=keras.optimizers.AdamW(
            keras.optimizers.schedules.CosineDecay(digit_ocr.LEARNING_RATE, epochs * steps),
            weight_decay=digit_ocr.WEIGHT_DECAY["lenet5"],
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    model.fit(train[0], train[1], batch_size=batch_size, epochs=epochs,
              callbacks=[timer], verbose=0)
    accuracy = float((model.predict(test[0], verbose=0).argmax(1) == test[1]).mean())
    return images_per_second(timer.seconds, len(train[0])), accuracy


def pytorch(train, test, epochs, batch_size, seed) -> tuple[float, float]:
    """(c) The same network in PyTorch eager on the CPU, batches sliced from in-memory tensors."""
    import torch
    from torch import nn

    from apps.digit_ocr import LEARNING_RATE, WEIGHT_DECAY
    from bench.torch_lenet import LeNet5

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    model = LeNet5()
    x = torch.from_numpy(np.ascontiguousarray(train[0].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(train[1].astype(np.int64))
    steps = -(-len(x) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY["lenet5"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
        seconds.append(time.perf_counter() - started)
    with torch.no_grad():
        test_x = torch.from_numpy(np.ascontiguousarray(test[0].transpose(0, 3, 1, 2)))
        predicted = model(test_x).argmax(1).numpy()
    return images_per_second(seconds, len(x)), float((predicted == test[1]).mean())


def main(argv=None) -> dict:
    from apps import runner

    parser = argparse.ArgumentParser(prog="python -m bench.lenet_training",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args(argv)

    dataset, train, test = load_data()
    contenders = {
        "apps.digit_ocr pipeline": lambda seed: keras_pipeline(
            dataset, test, args.epochs, args.batch_size, seed),
        "Keras fit on numpy": lambda seed: keras_numpy(
            train, test, args.epochs, args.batch_size, seed),
    }
    try:
        import torch  # noqa: F401

        contenders["PyTorch eager (CPU)"] = lambda seed: pytorch(
            train, test, args.epochs, args.batch_size, seed)
    except ImportError:
        print("PyTorch is not installed (pip install torch==2.13.0): its column is skipped")

    measured = {name: {"images_per_second": [], "test_accuracy": []} for name in contenders}
    for run in range(args.runs):  # interleaved, so drifts in machine load hit every contender
        for name, train_once in contenders.items():
            speed, accuracy = train_once(seed=run)
            measured[name]["images_per_second"].append(speed)
            measured[name]["test_accuracy"].append(accuracy)
            print(f"run {run + 1}/{args.runs} {name}: {speed:,.0f} images/s, "
                  f"test accuracy {accuracy:.4f}", flush=True)

    ours = statistics.median(measured["apps.digit_ocr pipeline"]["images_per_second"])
    rows = []
    for name, figures in measured.items():
        speeds = figures["images_per_second"]
        figures["median_images_per_second"] = statistics.median(speeds)
        figures["median_test_accuracy"] = statistics.median(figures["test_accuracy"])
        rows.append({
            "trainer": name,
            "images/s (median)": f"{statistics.median(speeds):,.0f}",
            "spread": f"{min(speeds):,.0f}..{max(speeds):,.0f}",
            "ours / this": f"{ours / statistics.median(speeds):.2f}x",
            "test accuracy": f"{figures['median_test_accuracy']:.4f}",
        })
    print(f"\nLeNet-5 training on {dataset.name}: {len(train[0]):,} images, batch "
          f"{args.batch_size}, {args.epochs} epochs (first not timed), {args.runs} runs, "
          f"{os.cpu_count()} cores")
    runner.print_table(rows)
    save_results("lenet_training", {"epochs": args.epochs, "batch_size": args.batch_size,
                                    "runs": args.runs, "results": measured})
    return measured


if __name__ == "__main__":
    main()
