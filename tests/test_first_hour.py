"""A new user's first hour. The run trained last is the one evaluate, predict and export read,
in every app (one LAST convention, `apps.runner`), and a command says which run it read;
`train --quick` is `make demo`'s schedule; a quiet start: a command's stderr holds no TensorFlow
or LiteRT start-up log, only what the user must read."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps import captioning, digit_ocr, fraud, gan, runner, translation

PROJECT = Path(__file__).resolve().parents[1]

# Two small, different models per app, trained from the command line one after the other.
TINY_EPOCH = ["--epochs", "1", "--verbose", "0"]
MODELS = {
    "digit_ocr": (digit_ocr, ["--model", "lenet5"], ["--model", "dsn"]),
    "fraud": (fraud, ["--model", "autoencoder", "--rows", "3000"],
              ["--model", "rbm", "--rows", "3000"]),
    "gan": (gan, ["--model", "dcgan", "--filters", "8"], ["--model", "cgan", "--filters", "8"]),
    "translation": (translation, ["--size", "600", "--units", "32", "--embedding-dim", "16"],
                    ["--size", "600", "--units", "32", "--embedding-dim", "16", "--cell",
                     "lstm"]),
    "captioning": (captioning, ["--scenes", "300", "--units", "32"],
                   ["--scenes", "300", "--units", "32", "--decoder", "show-and-tell"]),
}


@pytest.mark.parametrize("app", MODELS)
def test_export_without_options_exports_the_run_trained_last(app, trained_run, tmp_path,
                                                              monkeypatch, capsys):
    monkeypatch.setattr(runner, "RUNS_ROOT", tmp_path / "runs")
    module, model_a, model_b = MODELS[app]
    judge = ["--evaluator", str(trained_run)] if app == "gan" else []  # a LeNet-5 to judge by
    for name, options in (("a", model_a), ("b", model_b)):
        module.main(["train", *options, *TINY_EPOCH, *judge, "--run-dir", str(tmp_path / name)])
    capsys.readouterr()

    module.main(["export", "--model-base", str(tmp_path / "models")])

    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"Using the run in {tmp_path / 'b'} (trained last; --run-dir chooses another)"
    [report_file] = (tmp_path / "models").rglob("tflite_report.json")
    assert json.loads(report_file.read_text())["run"] == str((tmp_path / "b").resolve())


def test_a_named_run_wins_over_the_last_one(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "RUNS_ROOT", tmp_path / "runs")
    runner.RunDir(tmp_path / "elsewhere").mark_last("digit_ocr")  # no run there
    digit_ocr.main(["evaluate", "--run-dir", str(trained_run)])
    out = capsys.readouterr().out
    assert out.startswith(f"Using the run in {trained_run} (--run-dir)\n")
    assert "test accuracy" in out
    with pytest.raises(runner.UsageError, match="elsewhere: no trained model"):
        digit_ocr.main(["evaluate"])


def test_quick_is_the_demo_schedule_and_explicit_options_win():
    args = translation.parse_args(["train", "--quick", "--epochs", "5"])
    assert (args.size, args.epochs) == (translation.QUICK["size"], 5)
    args = captioning.parse_args(["train", "--quick"])
    assert (args.scenes, args.epochs) == (captioning.QUICK["scenes"], captioning.QUICK["epochs"])
    assert gan.parse_args(["train"]).epochs == gan.EPOCHS != gan.QUICK["epochs"]


# ---------------------------------------------------------------------------------------------
# A quiet start
# ---------------------------------------------------------------------------------------------


def run_command(*argv, environment=None):
    # Without the suite's TF_CPP_MIN_LOG_LEVEL or any other log setting: as a user's shell.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TF_")} | (environment or {})
    return subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_failing_predict_says_one_line_on_stderr(trained_run, tmp_path):
    corrupt = tmp_path / "scan.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    completed = run_command("apps.digit_ocr", "predict", str(corrupt), "--run-dir",
                            str(trained_run))
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        f"error: {corrupt}: not a readable image (cannot identify image file '{corrupt}')"]


def test_a_successful_predict_and_the_litert_runner_print_no_start_up_log(exported, digits,
                                                                         tmp_path):
    from PIL import Image

    picture = tmp_path / "digit.png"
    frame, _ = next(iter(digits.test))
    Image.fromarray(frame.numpy()[..., 0]).save(picture)
    _, report = exported
    int8 = Path(report["saved_model"]) / "assets.extra" / report["int8"]["file"]
    for argv in (("apps.digit_ocr", "predict", str(picture), "--run-dir",
                  str(Path(report["run"]))),
                 ("serving.litert", str(int8), str(picture))):
        completed = run_command(*argv)
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == "", argv
        assert f"{picture}: " in completed.stdout


def test_the_start_up_log_is_there_when_asked_for(trained_run, tmp_path):
    completed = run_command("apps.digit_ocr", "evaluate", "--run-dir", str(trained_run),
                            environment={"DEEP_ARCHITECTURES_TF_LOGS": "1"})
    assert completed.returncode == 0, completed.stderr
    # What the quiet start hides on a machine without a GPU (assumes this suite runs on one)
    assert "absl::InitializeLog()" in completed.stderr
