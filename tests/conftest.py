"""Shared fixtures. TensorFlow is imported once per process; the CPU is split into two logical
devices before anything touches it, so MirroredStrategy can be tested without GPUs."""

import pytest

from apps import runner  # first: it quiets TensorFlow's C++ logging before the import

runner.split_cpu(2)

SHORT_EPOCHS = 12  # enough for LeNet-5 to be far past chance on the embedded digits


@pytest.fixture(scope="session", autouse=True)
def runs_root(tmp_path_factory):
    """Tests never write into the user's runs/: default run directories and each app's LAST
    mark go under a temporary directory."""
    runner.RUNS_ROOT = tmp_path_factory.mktemp("runs")
    return runner.RUNS_ROOT


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
