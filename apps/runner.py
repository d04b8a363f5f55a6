"""What every app's commands need besides their model: devices and distribution strategy, the
training outline (`TrainingRun`), run directories (`RunDir`) and which one was trained last, and a
command line that reports bad input in one line.

A run directory holds one training run:

    runs/<app>/<model>/
        run.json           the app's config (its dataclass, `asdict`) and what the data decided
        backup/            step-level backups (`apps.backup`); a re-run of the same command
                           resumes exactly where the newest one was taken
        best.keras         the checkpoint with the best validation metric
        history.csv        one row per epoch
        training_curves.png
        logs/              TensorBoard
        metrics.json       the final figures
    runs/<app>/LAST        the path of the run trained last: what evaluate, predict and export
                           read unless --run-dir (or --model) says otherwise
"""

import argparse
import csv
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from apps import backup
from pipelines import DataError

# Where `train` writes unless --run-dir says otherwise, and where each app's LAST lives; the test
# suite points it (and its subprocesses, through the environment) at a temporary directory.
RUNS_ROOT = Path(os.environ.get("DEEP_ARCHITECTURES_RUNS", "runs"))
STRATEGIES = ("auto", "one", "mirrored", "multiworker")


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


def configure(args: argparse.Namespace) -> None:
    """What must happen before TensorFlow runs its first op, from the training options: logical
    CPUs, the multi-worker strategy (it joins the cluster at start-up) and the dtype policy."""
    split_cpu(getattr(args, "devices", 1))
    if getattr(args, "strategy", None) == "multiworker":
        choose_strategy("multiworker")
    if getattr(args, "mixed_precision", False):
        import keras
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            print("note: --mixed-precision needs a GPU (float16 is slower than float32 on a"
                  " CPU); training in float32", file=sys.stderr)


def choose_strategy(name: str):
    """`auto`: MirroredStrategy over the GPUs when there are several, else the default strategy.
    `mirrored` without GPUs mirrors over the logical CPUs (see `split_cpu`). `multiworker`: one
    MultiWorkerMirroredStrategy over the cluster that `TF_CONFIG` describes."""
    import tensorflow as tf

    if name == "multiworker":
        return multiworker_strategy()
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


@functools.cache
def multiworker_strategy():
    """MultiWorkerMirroredStrategy from `TF_CONFIG`, with the fix Keras' `fit` needs under it
    (`apps.multiworker_fix`). Created once, before any other op: it starts this worker's server."""
    import tensorflow as tf

    from apps import multiworker_fix

    try:
        cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    except (KeyError, TypeError, json.JSONDecodeError):
        raise UsageError("--strategy multiworker needs TF_CONFIG, e.g. "
                         '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                         '"task": {"type": "worker", "index": 0}}; see README "Scaling out"'
                         ) from None
    if not isinstance(cluster, dict) or not cluster:
        raise UsageError("TF_CONFIG: 'cluster' must map job names to host:port lists")
    multiworker_fix.apply()
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory and exports: always, except on the
    non-chief workers of a multi-worker run (the chief is task "chief", else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(strategy.extended, "_in_multi_worker_mode", lambda: 0)():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def worker_run_dir(run_dir: Path, strategy) -> Path:
    """The chief trains into `run_dir`; another worker into a scratch directory of its own
    (its backups let it resume with the others; nothing there is meant to be kept)."""
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    scratch = Path(tempfile.gettempdir(), "deep-architectures", *run_dir.resolve().parts[1:])
    return scratch / f"{resolver.task_type}-{resolver.task_id}"


def scaled_learning_rate(learning_rate: float, strategy) -> float:
    """Learning rates are stated for one replica's batch; N replicas train on an N times larger
    global batch, so the rate grows N times (the linear scaling rule, Goyal et al., 2017)."""
    return learning_rate * strategy.num_replicas_in_sync


# ---------------------------------------------------------------------------------------------
# Run directory and callbacks
# ---------------------------------------------------------------------------------------------


def backup_dir(run_dir: Path) -> Path:
    return run_dir / "backup"


def start_run(run_dir: Path) -> backup.Position | None:
    """Prepares `run_dir` for training; returns the position it resumes from, or None if fresh.

    A fresh run clears what an earlier finished run left, so its history does not mix in. A
    resumed run drops history rows of epochs the backup does not hold (the kill came between
    the row and the backup): they are trained again.
    """
    position = backup.latest_position(backup_dir(run_dir))
    resumed = position.epoch if position else None
    if position:
        print(f"Resuming {run_dir} from its backup: epoch {position.epoch + 1}, "
              f"{position.batch} batches in, step {position.step}")
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
    return position


def best_so_far(run_dir: Path, monitor: str, mode: str = "max") -> float | None:
    """The best `monitor` in history.csv (a resumed run must beat the epochs before the kill)."""
    history = read_history(run_dir) if (run_dir / "history.csv").is_file() else {}
    best = max if mode == "max" else min  # mode "min" for a monitored loss
    return best(history[monitor]) if history.get(monitor) else None


def training_callbacks(run_dir: Path, monitor: str | None = "val_accuracy",
                       resumed: bool = False, mode: str = "max"):
    """The history row, the best checkpoint by `monitor` (none when None) and TensorBoard."""
    import keras

    # `fit` below calls Keras' fit once per epoch: the log appends (start_run clears it for a
    # fresh run). The backup comes last in `fit`, after the history row and the checkpoint.
    callbacks = [keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True)]
    if monitor is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True,
            initial_value_threshold=best_so_far(run_dir, monitor, mode) if resumed else None,
        ))
    return [*callbacks, keras.callbacks.TensorBoard(str(run_dir / "logs"))]


def agree_on_position(strategy, position: backup.Position) -> None:
    """Workers of a multi-worker run each restore their own newest backup; they must continue
    from the same step (a worker whose scratch space was wiped would start over alone)."""
    import tensorflow as tf

    if not getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        return
    # Sums over the N replicas of the steps and of their squares (exact integers in float64):
    # they are N * step and N * step^2 only if every replica's step is this one's, whatever N.
    step = float(position.step)
    sums = strategy.run(lambda: tf.constant([step, step * step], tf.float64))
    replicas = strategy.num_replicas_in_sync
    if strategy.reduce("SUM", sums, axis=None).numpy().tolist() != [replicas * step,
                                                                   replicas * step * step]:
        raise UsageError(f"the workers resumed from different backups (this one from step "
                         f"{position.step}); delete the backup directories on every worker to "
                         "start afresh")


def fit(model, epoch_batches, epochs: int, run_dir: Path, *, steps_per_epoch: int,
        validation_data=None, callbacks=(), backup_every: int | None = None, jit: bool = False,
        verbose="auto") -> int:
    """`model.fit` for `epochs`, resumable exactly: returns the number of steps trained.

    `epoch_batches(epoch)` gives that epoch's training batches, the same ones in every process
    (shuffled with a seed derived from the epoch), `steps_per_epoch` of them. Keras' fit runs
    one epoch at a time so that a resumed epoch can start at the batch where the backup was
    taken: the state comes back from `run_dir/backup`, the epoch's batches are rebuilt and the
    ones already trained on are skipped. A finished run deletes its backup.
    """
    import keras
    import tensorflow as tf

    backups = backup.StepBackup(backup_dir(run_dir), steps_per_epoch, every_steps=backup_every)
    with model.distribute_strategy.scope():
        try:
            start = backups.restore(model) or backup.Position(0, 0, 0)
        except ValueError as error:
            raise UsageError(f"{error}; delete {backup_dir(run_dir)} to start afresh") from None
    agree_on_position(model.distribute_strategy, start)
    if jit and model.distribute_strategy.num_replicas_in_sync > 1 and not (
            tf.config.list_logical_devices("GPU")):
        # XLA cannot reach another logical CPU's variables ("Trying to access resource ...
        # located in device CPU:1 from device CPU:0"); mirroring over CPUs is for trying out.
        print("note: --jit is ignored when mirroring over logical CPUs", file=sys.stderr)
    elif jit:
        model.jit_compile = True

    class OneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    for epoch in range(start.epoch, epochs):
        skipped = start.batch if epoch == start.epoch else 0
        if skipped:  # a pipeline of its own: iterating the epoch's would move its shuffle on
            backups.resume_epoch(skipped, validation_data or epoch_batches(epoch))
        model.fit(
            epoch_batches(epoch).skip(skipped),
            validation_data=validation_data,
            initial_epoch=epoch,
            epochs=epochs,
            callbacks=[*callbacks, backups, OneEpoch()],
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=verbose,
        )
    backups.clear()
    return epochs * steps_per_epoch


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
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")  # Paths as strings


def chosen_decoding(run_dir: Path, beam_width: int | None, alpha: float | None,
                    defaults: tuple[int, float]) -> tuple[int, float]:
    """(beam width, length penalty): the ones asked for (--beam-width / --alpha), else what
    training chose on validation (`decoding.json` in the run), else `defaults`."""
    path = Path(run_dir) / "decoding.json"
    chosen = json.loads(path.read_text()) if path.is_file() else {}
    return (beam_width if beam_width is not None else chosen.get("beam_width", defaults[0]),
            alpha if alpha is not None else chosen.get("alpha", defaults[1]))


# ---------------------------------------------------------------------------------------------
# Configs, run directories, the last run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class TrainingConfig:
    """How a `train` command runs. Each app's config extends it with its own fields; the command
    line fills it (`config_from_args`) and run.json stores it (`asdict`)."""

    epochs: int
    batch_size: int  # per replica
    seed: int = 42
    strategy: str = "auto"
    devices: int = 1  # logical CPUs, to try MirroredStrategy without GPUs
    mixed_precision: bool = False
    jit: bool = False
    backup_every: int | None = None
    run_dir: Path | None = None
    verbose: int | str = "auto"
    # False for a run made on the side (the GAN's judging LeNet-5): it does not become the
    # app's last run, which the user's evaluate / predict / export read.
    mark_last: bool = True


def config_from_args(config_class, args: argparse.Namespace, **overrides):
    """The config dataclass filled from the parsed options whose names are its fields."""
    names = {field.name for field in dataclasses.fields(config_class)}
    values = {name: value for name, value in vars(args).items() if name in names}
    return config_class(**(values | overrides))


class RunDir:
    """One run directory: its files, run.json and metrics.json, and the app's last-run mark."""

    def __init__(self, path: Path, chosen_by: str = ""):
        self.path = Path(path)
        self.chosen_by = chosen_by  # how a command came to read this run, for `announce`

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """A file training wrote; a UsageError if it is missing (nothing trained there yet)."""
        path = self.path / name
        if not path.exists():
            raise UsageError(f"{self.path}: no trained model ({name}); run `train` first")
        return path

    def config(self) -> dict:
        return json.loads(self.file("run.json").read_text())

    def write_config(self, payload: dict) -> None:
        write_json(self.path / "run.json", payload)

    def write_metrics(self, payload: dict) -> None:
        write_json(self.path / "metrics.json", payload)

    def announce(self, file=None) -> None:
        """The one line with which evaluate, predict and export say which run they read."""
        path = self.path.resolve()
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"Using the run in {shown}" + (f" ({self.chosen_by})" if self.chosen_by else ""),
              file=file)

    def mark_last(self, app: str) -> None:
        last = last_run_file(app)
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_text(f"{self.path.resolve()}\n")


def last_run_file(app: str) -> Path:
    return RUNS_ROOT / app / "LAST"  # RUNS_ROOT read at call time: tests point it elsewhere


def find_run(app: str, run_dir: Path | None = None, model_dir: Path | None = None,
             fallback: Path | None = None) -> RunDir:
    """The run a command reads: --run-dir; else the default directory of the --model named;
    else the app's last trained run; else `fallback` (where runs were kept before LAST)."""
    if run_dir is not None:
        return RunDir(run_dir, "--run-dir")
    if model_dir is not None:
        return RunDir(model_dir, "--model's run")
    last = last_run_file(app)
    if last.is_file():
        return RunDir(Path(last.read_text().strip()), "trained last; --run-dir chooses another")
    if fallback is not None:
        return RunDir(fallback)
    raise UsageError(f"no trained {app} run yet: run `python -m apps.{app} train` first, or"
                     " name one with --run-dir")


class TrainingRun:
    """The outline every app's `train` follows; the app supplies what is its own:

        run = runner.TrainingRun(APP, config, default_dir)   # seed, strategy, global batch
        ... read and check the data; epoch_batches(epoch) built with run.global_batch ...
        run.start(class_names=...)          # run directory ready (fresh or resumed), run.json
        with run.strategy.scope():
            model = build_model(...); model.compile(...)
        steps = run.fit(model, epoch_batches, steps_per_epoch=..., validation_data=...)
        ... held-out figures of the best checkpoint ...
        return run.finish(metrics)          # metrics.json; the app's last run (chief only)

    The directory is touched only in `start`, after the data has been read: a bad --data
    leaves an earlier run as it was.
    """

    def __init__(self, app: str, config: TrainingConfig, default_dir: Path):
        import keras

        keras.utils.set_random_seed(config.seed)
        self.app, self.config = app, config
        self.strategy = choose_strategy(config.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        self.global_batch = config.batch_size * self.replicas
        self.dir = RunDir(worker_run_dir(Path(config.run_dir or default_dir), self.strategy))
        self.path = self.dir.path
        self.resumed: backup.Position | None = None
        self.training_seconds: float | None = None

    def scaled_learning_rate(self, learning_rate: float) -> float:
        return scaled_learning_rate(learning_rate, self.strategy)

    def start(self, **facts) -> None:
        """Prepares the directory (`start_run`) and writes run.json: the config, then `facts`
        (what the data decided: class names, vocabulary sizes, row counts...)."""
        self.resumed = start_run(self.path)
        self.dir.write_config({"app": self.app, **dataclasses.asdict(self.config), **facts,
                               "replicas": self.replicas, "global_batch_size": self.global_batch})

    def fit(self, model, epoch_batches, *, steps_per_epoch: int, validation_data=None,
            monitor: str | None = "val_accuracy", mode: str = "max", callbacks=()) -> int:
        """`runner.fit` for the config's epochs with the run's callbacks after the app's own
        (`callbacks` may add to the logs that the history row and the checkpoint read), then
        the training curves. `monitor=None`: no best.keras (the app keeps its own model)."""
        started = time.perf_counter()
        steps = fit(model, epoch_batches, self.config.epochs, self.path,
                    steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                    callbacks=[*callbacks, *training_callbacks(
                        self.path, monitor, resumed=self.resumed is not None, mode=mode)],
                    backup_every=self.config.backup_every, jit=self.config.jit,
                    verbose=self.config.verbose)
        self.training_seconds = round(time.perf_counter() - started, 1)
        plot_history(self.path)
        return steps

    def finish(self, metrics: dict) -> dict:
        """metrics.json; on the chief, this run becomes the app's last run."""
        self.dir.write_metrics(metrics)
        # another worker's run directory is scratch
        if self.config.mark_last and is_chief(self.strategy):
            self.dir.mark_last(self.app)
        return metrics


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def add_training_options(parser: argparse.ArgumentParser, epochs: int | None,
                         batch_size: int | None, epochs_help: str = "default: %(default)s",
                         batch_help: str = "default: %(default)s") -> None:
    """--epochs, --batch-size, --seed, --verbose and how to run: strategy, devices, precision,
    XLA, backups."""
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="per replica; the global batch is this times the number of replicas"
        f" ({batch_help})",
    )
    parser.add_argument("--seed", type=int, default=TrainingConfig.seed,
                        help="weights, shuffling and augmentation (default: %(default)s)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="Keras fit output: 0 silent, 1 progress bar, 2 a line per epoch")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: MirroredStrategy when more than one GPU is visible; multiworker: one"
        " replica set across the machines in TF_CONFIG (default: %(default)s)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="split the CPU into N logical devices (to try --strategy mirrored without GPUs)",
    )
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on GPUs (ignored, with a note, on a CPU)")
    parser.add_argument("--jit", action="store_true",
                        help="compile the train step with XLA (helps on GPUs; slower on a CPU)")
    parser.add_argument("--backup-every", type=int, default=None, metavar="STEPS",
                        help="back up every STEPS batches (default: every"
                        f" {backup.BACKUP_SECONDS:g} s and at each epoch end)")


def add_quick_option(train_parser: argparse.ArgumentParser, schedule: dict) -> None:
    """--quick: the shorter schedule that `make demo` trains (`schedule`: option -> value)."""
    shown = ", ".join(f"--{option.replace('_', '-')} {value}" for option, value in
                      schedule.items())
    train_parser.add_argument(
        "--quick", action="store_true",
        help=f"the shorter schedule that `make demo` trains ({shown}): a weaker model than"
             " the default schedule's (both figures in README.md); options given still win")


def with_quick_schedule(args: argparse.Namespace, train_parser: argparse.ArgumentParser,
                        schedule: dict) -> argparse.Namespace:
    """`train --quick`: `schedule`'s values for the options the command line left at their
    defaults."""
    if getattr(args, "quick", False):
        for option, value in schedule.items():
            if getattr(args, option) == train_parser.get_default(option):
                setattr(args, option, value)
    return args


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


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {str(message).strip().splitlines()[0]} ({category.__name__})\n"


def run_cli(main, argv=None) -> None:
    """Runs `main(argv)`; bad input ends in one line on stderr and exit status 2, a warning is
    one line too (not Python's two, with the source line of a library the user did not write)."""
    warnings.formatwarning = one_line_warning
    try:
        main(argv)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def print_export(report: dict) -> None:
    """`export`'s table: one row per `.tflite` variant with the figures of its LiteRT check."""

    def shown(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    print_table([
        {"format": f"TFLite {variant}", "file": row["file"],
         "size (KiB)": f"{row['bytes'] / 1024:.1f}",
         **{key.replace("_", " "): shown(value) for key, value in row.items()
            if key not in ("file", "bytes")}}
        for variant, row in report.items() if isinstance(row, dict) and "bytes" in row
    ])
    print(f"\nSavedModel and .tflite files in {report['saved_model']}")
