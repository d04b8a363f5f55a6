"""Exact resume after a kill: step-level backups of everything a training run changes.

Keras' `BackupAndRestore` resumes at the first batch of the interrupted epoch, so a run killed
late in an epoch trains on most of that epoch twice and ends with more steps than an
uninterrupted one. Here a backup records the *position* in the run (epoch, batch within it) and
the whole state that training changes:

    model.variables          weights, batch-norm statistics, dropout seed-generator states
    each optimizer's state   step counter, learning-rate schedule position, Adam moments...
    metric accumulators      so the resumed epoch's averages cover the whole epoch

`runner.fit` restores it and rebuilds the interrupted epoch's batches from the same seed, skipping
those already trained on, so a re-run of the same command continues where the backup was taken and
ends with the same step count (and, with deterministic ops, the same weights) as a run that was
never killed.

A backup is one directory, written under a temporary name and renamed into place:

    backup/step-000000120/
        variables.npz      every variable above, in a fixed order
        backup.json        position, step, the sha256 of variables.npz

A kill while one is written leaves a `.tmp-*` directory that is ignored and cleared; a damaged one
(truncated on disk, checksum mismatch) is reported and the previous one is used: the two newest
are kept.
"""

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

BACKUP_SECONDS = 30.0  # at most this long between backups (and one at every epoch end)
BACKUPS_KEPT = 2


@dataclass(frozen=True)
class Position:
    """Where a run stands: `batch` batches of epoch `epoch` are done (batch 0: none yet)."""

    epoch: int
    batch: int
    step: int  # batches trained since the start of the run


def optimizers(model: keras.Model) -> list[keras.optimizers.Optimizer]:
    """The optimizers a model trains with: `model.optimizer`, or several (a GAN's G and D)."""
    found = [value for value in vars(model).values()
             if isinstance(value, keras.optimizers.Optimizer)]
    return list({id(optimizer): optimizer for optimizer in found}.values())


def state_variables(model: keras.Model) -> list:
    """Everything training changes, except the metric accumulators, in a fixed order."""
    variables = list(model.variables)
    for optimizer in optimizers(model):
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        variables += optimizer.variables
    return variables


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_backup(directory: Path, model: keras.Model, position: Position) -> Path:
    """Writes one backup atomically; returns its directory."""
    final = directory / f"step-{position.step:09d}"
    partial = directory / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    arrays = {f"state_{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(state_variables(model))}
    arrays |= {f"metric_{i:05d}": np.asarray(v.numpy())
               for i, v in enumerate(model.metrics_variables)}
    variables_file = partial / "variables.npz"
    with open(variables_file, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    manifest = {"epoch": position.epoch, "batch": position.batch, "step": position.step,
                "sha256": sha256(variables_file), "written": time.time()}
    (partial / "backup.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    for old in backups(directory)[BACKUPS_KEPT:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def backups(directory: Path) -> list[Path]:
    """Backup directories, newest first."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("step-*"), reverse=True)


def read_backup(path: Path) -> tuple[Position, dict]:
    """Position and arrays of one backup; ValueError when it is damaged."""
    try:
        manifest = json.loads((path / "backup.json").read_text())
        variables_file = path / "variables.npz"
        if sha256(variables_file) != manifest["sha256"]:
            raise ValueError("variables.npz does not match its checksum (truncated or altered)")
        with np.load(variables_file) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None
    return Position(manifest["epoch"], manifest["batch"], manifest["step"]), arrays


def latest_position(directory: Path) -> Position | None:
    """The position of the newest intact backup, without touching a model."""
    for path in backups(directory):
        try:
            return read_backup(path)[0]
        except ValueError:
            continue
    return None


class StepBackup(keras.callbacks.Callback):
    """Backs a run up every `every_steps` batches (or every BACKUP_SECONDS) and at epoch ends,
    and restores the newest intact backup into a model.

    With `steps_per_execution` > 1, Keras reports batches in groups, so backups fall on the
    group boundaries.
    """

    def __init__(self, directory: Path, steps_per_epoch: int | None = None,
                 every_steps: int | None = None, every_seconds: float = BACKUP_SECONDS):
        super().__init__()
        self.directory = Path(directory)
        self.steps_per_epoch = steps_per_epoch  # needed to back up, not to restore
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self._skipped = 0  # batches of the current epoch trained before the resume
        self._metric_values: list[np.ndarray] = []
        self._last_saved_step = 0
        self._last_saved_time = time.monotonic()

    def restore(self, model: keras.Model) -> Position | None:
        """Loads the newest intact backup into `model`; returns its position (None: no backup)."""
        for path in backups(self.directory):
            try:
                position, arrays = read_backup(path)
            except ValueError as error:
                print(f"warning: backup {path} is damaged ({error}); trying the one before")
                continue
            variables = state_variables(model)
            saved = [arrays[name] for name in sorted(arrays) if name.startswith("state_")]
            if len(saved) != len(variables) or any(
                tuple(v.shape) != a.shape for v, a in zip(variables, saved)
            ):
                raise ValueError(f"backup {path} was written by a different model")
            for variable, value in zip(variables, saved):
                variable.assign(value)
            # Keras creates the metrics' accumulators when fit starts: put back in on_epoch_begin.
            self._metric_values = [arrays[name] for name in sorted(arrays)
                                   if name.startswith("metric_")]
            self._last_saved_step = position.step
            self.set_model(model)
            return position
        return None

    def resume_epoch(self, skipped: int, batches) -> None:
        """Called by `runner.fit` before the interrupted epoch's `fit`: `skipped` batches of it
        are done. `batches` (any of the model's) may be evaluated on to build its metrics."""
        self._skipped = skipped
        if len(self._metric_values) != len(self.model.metrics_variables):
            # Keras creates a compiled model's metric accumulators on the first batch it sees;
            # one evaluation batch (no weights, no random state touched) creates them.
            self.model.evaluate(batches.take(1), verbose=0)

    def on_epoch_begin(self, epoch, logs=None):
        # fit resets the metrics just before this: put back the interrupted epoch's sums.
        metrics = self.model.metrics_variables
        if self._skipped and len(self._metric_values) == len(metrics):
            for variable, value in zip(metrics, self._metric_values):
                variable.assign(value)
        self._metric_values = []
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._skipped = 0
        self.save(Position(epoch + 1, 0, (epoch + 1) * self.steps_per_epoch))

    def on_train_batch_end(self, batch, logs=None):
        done = self._skipped + batch + 1
        if done >= self.steps_per_epoch:
            return  # the epoch-end backup follows, after validation and the history row
        step = self._epoch * self.steps_per_epoch + done
        due_by_steps = self.every_steps and step - self._last_saved_step >= self.every_steps
        due_by_time = time.monotonic() - self._last_saved_time >= self.every_seconds
        if due_by_steps or due_by_time:
            self.save(Position(self._epoch, done, step))

    def save(self, position: Position) -> None:
        write_backup(self.directory, self.model, position)
        self._last_saved_step = position.step
        self._last_saved_time = time.monotonic()

    def clear(self) -> None:
        """A finished run leaves no backup: the next run of the command starts afresh."""
        shutil.rmtree(self.directory, ignore_errors=True)
