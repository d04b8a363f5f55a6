"""Shared fixtures. TensorFlow is imported once per process; the CPU is split into two logical
devices before anything touches it, so MirroredStrategy can be tested without GPUs."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before anything reads it, and inherited by every command a test starts: the runs of the tests,
# and each app's LAST mark, go to a temporary directory, never into the user's runs/.
os.environ["DEEP_ARCHITECTURES_RUNS"] = tempfile.mkdtemp(prefix="deep-architectures-runs-")

from apps import runner  # noqa: E402  (first of the project: it quiets TensorFlow's logging)

runner.split_cpu(2)

PROJECT = Path(__file__).resolve().parents[1]
USER_DIRECTORIES = ("runs", "saved_models")

SHORT_EPOCHS = 12  # enough for LeNet-5 to be far past chance on the embedded digits


def snapshot(directories=USER_DIRECTORIES) -> dict[str, tuple[int, int]]:
    """Every file under the user's directories: size and modification time."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns)
            for directory in directories for path in sorted((PROJECT / directory).rglob("*"))
            if path.is_file()}


@pytest.fixture(scope="session", autouse=True)
def user_files_untouched():
    """The suite fails if anything it ran wrote into the user's runs/ or saved_models/."""
    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(set(before) ^ set(after) | {p for p in before if after.get(p, before[p])
                                                 != before[p]})
    shutil.rmtree(runner.RUNS_ROOT, ignore_errors=True)
    assert not changed, f"the test suite wrote into the working tree: {changed[:5]}"


@pytest.fixture(scope="session")
def digits():
    from pipelines.images import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A classic LeNet-5 trained briefly on the embedded digits; its run directory."""
    from apps import digit_ocr

    run_dir = tmp_path_factory.mktemp("run") / "lenet5"
    digit_ocr.train(digit_ocr.TrainConfig(epochs=SHORT_EPOCHS, run_dir=run_dir, verbose=0))
    return run_dir


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """The trained run exported once: (model base, export report)."""
    from apps import digit_ocr

    model_base = tmp_path_factory.mktemp("saved_models")
    report = digit_ocr.export(trained_run, model_base, quiet=True)
    return model_base, report


@pytest.fixture
def kill_after_backup(monkeypatch):
    """`kill_after_backup(train, epoch, batch=None)` runs `train()` and kills it (a
    KeyboardInterrupt, as a kill would) right after the backup written `batch` batches into
    `epoch` (counted from 0; None: the first backup inside it). Later runs back up as usual."""
    from apps import backup

    saved = backup.StepBackup.save

    def run_killed(train, epoch: int, batch: int | None = None) -> None:
        def save_then_die(self, position):
            saved(self, position)
            if position.epoch == epoch and (position.batch == batch if batch is not None
                                            else position.batch > 0):
                raise KeyboardInterrupt

        monkeypatch.setattr(backup.StepBackup, "save", save_then_die)
        try:
            with pytest.raises(KeyboardInterrupt):
                train()
        finally:
            monkeypatch.setattr(backup.StepBackup, "save", saved)

    return run_killed
