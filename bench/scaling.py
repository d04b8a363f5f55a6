"""Training throughput by strategy: 1 and 2 replicas, and what resuming exactly costs.

    python -m bench.scaling [--epochs 4] [--batch-size 64] [--runs 2]

LeNet-5 (`apps.digit_ocr`'s model, pipeline and `runner.fit`) on MNIST's training digits from
../shared/data/mnist (else the embedded digits). Each configuration runs in its own process,
because the CPU must be split into logical devices before TensorFlow starts:

- one device, `runner.fit` (one Keras fit per epoch, step-level backups): what `train` does;
- one device, a single Keras `fit` over all epochs with no backups: what exact resume costs;
- MirroredStrategy over 2 logical CPUs (one step per call: Keras 3.15's multi-step loop fails
  under it). On a 2-core CPU the two replicas share the cores, so this row is a correctness smoke
  test, not a speed-up;
- on a GPU, when one is visible (or with `--gpu-rows`, to check them on a CPU): one GPU in
  float32, with mixed_float16 and with XLA, for LeNet-5 and for `apps.translation`'s model on
  its embedded corpus (sentence pairs/s over the whole run).

Images per second count every epoch but the first (tracing and warm-up); median of `--runs`.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import SHARED_DATA, save_results
from bench.lenet_training import EpochTimer, images_per_second

EPOCHS = 4
BATCH_SIZE = 64  # per replica, the app's default
RUNS = 2


def configurations(gpu: bool) -> list[dict]:
    rows = [
        {"name": "LeNet-5, 1 device, runner.fit (exact resume)", "devices": 1, "strategy": "one"},
        {"name": "LeNet-5, 1 device, one Keras fit, no backups", "devices": 1, "strategy": "one",
         "plain_fit": True},
        {"name": "LeNet-5, 2 logical CPUs, MirroredStrategy", "devices": 2,
         "strategy": "mirrored"},
    ]
    if gpu:
        for app in ("lenet5", "translation"):
            label = "LeNet-5" if app == "lenet5" else "NMT (GRU + attention)"
            rows += [
                {"name": f"{label}, 1 GPU, float32", "app": app},
                {"name": f"{label}, 1 GPU, mixed_float16", "app": app, "mixed": True},
                {"name": f"{label}, 1 GPU, XLA", "app": app, "jit": True},
            ]
    return [{"devices": 1, "strategy": "one", **row} for row in rows]


def measure_translation(configuration: dict, epochs: int) -> dict:
    """Sentence pairs per second over a whole `apps.translation` run on its embedded corpus
    (tracing included: the same for each row, XLA's compilation aside)."""
    from apps import translation

    with tempfile.TemporaryDirectory() as run_dir:
        metrics = translation.train(translation.TrainConfig(
            epochs=epochs, run_dir=Path(run_dir), verbose=0, evaluate_after=False,
            jit=configuration.get("jit", False)))
    return {"images_per_second": metrics["train_pairs"] * epochs / metrics["training_seconds"],
            "replicas": 1}


def measure(configuration: dict, data: str, epochs: int, batch_size: int) -> dict:
    """Runs in a fresh process: trains LeNet-5 and times each epoch."""
    import keras

    from apps import digit_ocr, runner
    from pipelines import images

    runner.split_cpu(configuration["devices"])
    if configuration.get("mixed"):
        keras.mixed_precision.set_global_policy("mixed_float16")
    if configuration.get("app") == "translation":
        return measure_translation(configuration, epochs)
    keras.utils.set_random_seed(0)
    dataset = images.load_image_dataset(data)
    strategy = runner.choose_strategy(configuration["strategy"])
    global_batch = batch_size * strategy.num_replicas_in_sync
    examples = images.count(dataset.train)
    steps = -(-examples // global_batch)
    with strategy.scope():
        model = digit_ocr.compile_model(digit_ocr.build_model("lenet5"), epochs * steps)

    timer = EpochTimer()

    def epoch_batches(epoch):
        return images.batches(dataset.train, global_batch, shuffle=True, seed=epoch)

    if configuration.get("plain_fit"):
        model.fit(images.batches(dataset.train, global_batch, shuffle=True), epochs=epochs,
                  callbacks=[timer], verbose=0)
    else:
        with tempfile.TemporaryDirectory() as run_dir:
            runner.fit(model, epoch_batches, epochs, Path(run_dir), steps_per_epoch=steps,
                       callbacks=[timer], jit=configuration.get("jit", False), verbose=0)
    return {"images_per_second": images_per_second(timer.seconds, examples),
            "replicas": strategy.num_replicas_in_sync}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--gpu-rows", action="store_true",
                        help="run the GPU rows even without a GPU (to check that they work)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one configuration, as JSON
    args = parser.parse_args(argv)
    mnist = SHARED_DATA / "mnist"
    data = str(mnist) if mnist.is_dir() else "digits"

    if args.measure:
        print(json.dumps(measure(json.loads(args.measure), data, args.epochs, args.batch_size)))
        return {}

    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    rows = []
    for configuration in configurations(gpu or args.gpu_rows):
        rates = []
        for _ in range(args.runs):
            completed = subprocess.run(
                [sys.executable, "-m", "bench.scaling", "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--measure", json.dumps(configuration)],
                capture_output=True, text=True, check=True)
            rates.append(json.loads(completed.stdout.strip().splitlines()[-1])
                         ["images_per_second"])
        rows.append({"configuration": configuration["name"],
                     "images/s (median)": round(statistics.median(rates)),  # NMT: pairs/s
                     "spread": f"{min(rates):,.0f}..{max(rates):,.0f}"})
    # Each row against the first of its model: LeNet-5's runner.fit, the NMT model's float32.
    baselines = {}
    for row in rows:
        model = row["configuration"].split(",")[0]
        baseline = baselines.setdefault(model, row["images/s (median)"])
        row["vs first row of the model"] = f"{row['images/s (median)'] / baseline:.2f}x"

    from apps.runner import print_table

    print(f"LeNet-5 on {data}, batch {args.batch_size} per replica, {args.epochs} epochs"
          f" (first not timed), median of {args.runs} runs; GPU: {'yes' if gpu else 'none'}")
    print_table(rows)
    payload = {"data": data, "epochs": args.epochs, "batch_size": args.batch_size,
               "runs": args.runs, "gpu": gpu, "rows": rows}
    save_results("scaling", payload)
    return payload


if __name__ == "__main__":
    main()
