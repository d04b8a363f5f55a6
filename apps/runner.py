"""What every app's `train` command needs besides its model: devices and distribution strategy,
a run directory with its callbacks and plots, and a command line that reports bad input in one line.

A run directory holds one training run:

    runs/<app>/<model>/
        backup/            BackupAndRestore state; a re-run of the same command resumes from it
        best.keras         the checkpoint with the best validation metric
        history.csv        one row per epoch
        training_curves.png
        logs/              TensorBoard
        metrics.json       the final figures
"""

import argparse
import csv
import functools
import json
import shutil
import sys
from pathlib import Path

from pipelines import DataError

RUNS_ROOT = Path("runs")
STRATEGIES = ("auto", "one", "mirrored")


class UsageError(DataError):
    """The command line asks for something that cannot be done (e.g. evaluate before train)."""


# ---------------------------------------------------------------------------------------------
# Devices and strategy
# ---------------------------------------------------------------------------------------------


def split_cpu(devices: int) -> None:
    """Splits the CPU into `devices` logical devices so MirroredStrategy can run without GPUs.

    Must run before TensorFlow initialises its devices, i.e. before the first op.
    """
    import tensorflow as tf

    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
        )


def choose_strategy(name: str):
    """`auto`: MirroredStrategy over the GPUs when there are several, else the default strategy.
    `mirrored` without GPUs mirrors over the logical CPUs (see `split_cpu`)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "one" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return mirrored_strategy(tuple(devices))


@functools.cache
def mirrored_strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per device set and process. A second one over the same devices
    reuses the first one's collective instance keys, and its all-reduces then fail with "Shape
    mismatch in the collective instance" (TensorFlow 2.21): `make demo`, a notebook or a test
    session that trains twice would hit it."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


# ---------------------------------------------------------------------------------------------
# Run directory and callbacks
# ---------------------------------------------------------------------------------------------


def backup_dir(run_dir: Path) -> Path:
    return run_dir / "backup"


def resumable_epoch(run_dir: Path) -> int | None:
    """How many epochs a BackupAndRestore backup in `run_dir` holds (None: no backup)."""
    metadata = backup_dir(run_dir) / "training_metadata.json"
    if not metadata.is_file():
        return None
    return int(json.loads(metadata.read_text())["epoch"])


def start_run(run_dir: Path) -> int | None:
    """Prepares `run_dir` for training; returns the epoch it resumes after, or None when fresh.

    A fresh run clears what an earlier finished run left, so its history does not mix in. A
    resumed run drops history rows of epochs the backup does not hold (the kill came between
    the row and the backup): they are trained again.
    """
    resumed = resumable_epoch(run_dir)
    if resumed is None and run_dir.exists():
        for leftover in ("history.csv", "logs", "metrics.json", "best.keras"):
            path = run_dir / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    history = run_dir / "history.csv"
    if resumed is not None and history.is_file():
        lines = history.read_text().splitlines(keepends=True)
        kept = [line for line in lines[1:] if int(line.split(",")[0]) < resumed]
        history.write_text("".join(lines[:1] + kept))
    run_dir.mkdir(parents=True, exist_ok=True)
    return resumed


def training_callbacks(run_dir: Path, monitor: str = "val_accuracy", resumed: bool = False,
                       mode: str = "max"):
    import keras

    # A resumed run must beat the best epoch before the kill to replace best.keras.
    history = read_history(run_dir) if resumed and (run_dir / "history.csv").is_file() else {}
    best = max if mode == "max" else min  # mode "min" for a monitored loss
    best_so_far = best(history[monitor]) if history.get(monitor) else None
    # Order matters at the end of an epoch: the history row and the best checkpoint are
    # written before the backup that says the epoch is done.
    return [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resumed),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
        keras.callbacks.BackupAndRestore(str(backup_dir(run_dir)), double_checkpoint=True),
    ]


def read_history(run_dir: Path) -> dict[str, list[float]]:
    with open(run_dir / "history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0]} if rows else {}


def plot_history(run_dir: Path) -> Path:
    """history.csv -> training_curves.png: each metric, training beside validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(run_dir)
    metrics = [k for k in history if k != "epoch" and not k.startswith("val_")]
    metrics = [k for k in metrics if k != "learning_rate"]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    epochs = [int(e) + 1 for e in history["epoch"]]
    for axis, metric in zip(axes[0], metrics):
        axis.plot(epochs, history[metric], label="training")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path = run_dir / "training_curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_training_options(parser: argparse.ArgumentParser, epochs: int | None, batch_size: int,
                         epochs_help: str = "default: %(default)s") -> None:
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="per replica; the global batch is this times the number of replicas"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: MirroredStrategy when more than one GPU is visible (default: %(default)s)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
    )


def print_table(rows: list[dict], file=None) -> None:
    """A plain aligned text table; the first row's keys are the header."""
    if not rows:
        return
    headers = list(rows[0])
    cells = [[str(row.get(h, "")) for h in headers] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line, file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)), file=file)


def run_cli(main, argv=None) -> None:
    """Runs `main(argv)`; bad input ends in one line on stderr and exit status 2."""
    try:
        main(argv)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
