"""Digit OCR end to end: learning, distribution, export round trip, reading images, bad input.
Resuming after a kill and several workers: tests/test_scaling.py."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from apps import digit_ocr, runner
from pipelines import images
from serving.litert import LiteRTModel

PROJECT = Path(__file__).resolve().parents[1]


def accuracy(model, split):
    x, y = images.labelled_arrays(split)
    return float((model.predict(x, verbose=0).argmax(1) == y).mean())


# --- learning ---------------------------------------------------------------------------------


def test_trained_model_beats_an_untrained_copy_on_held_out_digits(trained_run, digits):
    trained, _ = digit_ocr.load_run(trained_run)
    untrained = digit_ocr.build_model("lenet5")
    trained_accuracy = accuracy(trained, digits.test)
    untrained_accuracy = accuracy(untrained, digits.test)
    assert trained_accuracy >= 0.93, trained_accuracy
    assert untrained_accuracy <= 0.3, untrained_accuracy  # chance is 0.1
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(trained_accuracy)


def test_run_directory_has_what_a_user_looks_at(trained_run):
    for name in ("history.csv", "training_curves.png", "confusion_matrix.png", "metrics.json",
                 "best.keras", "run.json", "evaluation.json"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "logs").rglob("events.out.tfevents.*"))
    history = runner.read_history(trained_run)
    assert len(history["epoch"]) == 12
    assert history["loss"][-1] < history["loss"][0] / 3
    assert not (trained_run / "backup").exists()  # removed once training finished


def test_evaluate_command_prints_per_class_table(trained_run, capsys):
    digit_ocr.main(["evaluate", "--run-dir", str(trained_run)])
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out
    figures = json.loads((trained_run / "evaluation.json").read_text())
    assert f"test accuracy {figures['test_accuracy']:.4f} on 360 images" in out
    assert sum(c["support"] for c in figures["per_class"].values()) == 360


def test_c3_keeps_lenet5s_connection_table(trained_run):
    model, _ = digit_ocr.load_run(trained_run)
    kernel = model.get_layer("C3").kernel.numpy()  # [5, 5, 6 S2 maps, 16 C3 maps]
    connected = np.abs(kernel).sum(axis=(0, 1)) > 0
    assert connected.sum() == 60  # Table I: 6x3 + 6x4 + 3x4 + 1x6 connections
    assert connected[:, 15].all() and connected[[0, 1, 2], 0].all() and not connected[3:, 0].any()


def test_modern_variant_builds_and_trains_one_step(digits):
    model = digit_ocr.build_model("lenet5-modern")
    digit_ocr.compile_model(model, steps=1, model_name="lenet5-modern")
    history = model.fit(images.batches(digits.train, 32).take(1), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize("model_name", ["lenet5", "lenet5-modern"])
def test_mirrored_strategy_on_two_cpus_matches_one_device_for_three_steps(model_name, digits,
                                                                         monkeypatch):
    three_batches = images.batches(digits.train, 64).take(3)  # the same global batches

    def train_three_steps(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = digit_ocr.compile_model(digit_ocr.build_model(model_name), steps=10,
                                            model_name=model_name)
        model.steps_per_execution = 1  # a loss per step
        train_three_steps.initial = [w.numpy() for w in model.weights]
        losses = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
        model.fit(three_batches, verbose=0, callbacks=[record])
        return losses, [w.numpy() for w in model.weights]

    mirrored = runner.choose_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    # Same global batch, same learning rate: the app would scale the rate with the replicas.
    monkeypatch.setattr(runner, "scaled_learning_rate", lambda rate, strategy: rate)
    single_losses, single_weights = train_three_steps(tf.distribute.get_strategy())
    mirrored_losses, mirrored_weights = train_three_steps(mirrored)
    assert len(single_losses) == 3
    assert mirrored_losses[0] == pytest.approx(single_losses[0], rel=1e-5)
    if model_name == "lenet5":
        np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-5)
        for single, replicated in zip(single_weights, mirrored_weights):
            np.testing.assert_allclose(single, replicated, atol=1e-5)
    else:
        # Synchronised batch norm sums E[x] and E[x^2] across replicas; one device computes the
        # variance directly. The rounding differs by ~1e-7 and AdamW's first, sign-like steps
        # carry it into the weights, so later steps agree to 1e-3 (per-replica statistics: ~1e-2).
        np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-3)
        initial = train_three_steps.initial
        moved = sum(np.linalg.norm(w - w0) for w, w0 in zip(single_weights, initial))
        apart = sum(np.linalg.norm(a - b) for a, b in zip(single_weights, mirrored_weights))
        assert apart < 0.05 * moved, (apart, moved)


# --- export -----------------------------------------------------------------------------------


def test_export_writes_a_complete_tf_serving_version(exported):
    model_base, report = exported
    version = Path(report["saved_model"])
    assert version.parent == model_base / "digit_ocr" and version.name.isdigit()
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    extra = version / "assets.extra"
    assert (extra / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert json.loads((extra / "tflite_report.json").read_text())["int8"]["bytes"] > 0
    assert not [p for p in (model_base / "digit_ocr").iterdir() if not p.name.isdigit()]


def test_saved_model_and_float32_tflite_agree_with_keras(trained_run, exported, digits):
    _, report = exported
    model, _ = digit_ocr.load_run(trained_run)
    x, _ = images.labelled_arrays(digits.test.take(64))
    expected = model.predict(x, verbose=0)

    reloaded = tf.saved_model.load(report["saved_model"])
    served = reloaded.signatures["predict_pixels"](pixels=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)

    extra = Path(report["saved_model"]) / "assets.extra"
    litert = LiteRTModel(extra / "digit_ocr_float32.tflite").signature("predict_pixels")
    np.testing.assert_allclose(litert(pixels=x)["probabilities"], expected, atol=1e-5)


def test_quantised_tflite_is_small_and_as_accurate(exported):
    _, report = exported
    assert report["int8"]["bytes"] <= 0.3 * report["float32"]["bytes"]
    assert report["float16"]["bytes"] <= 0.55 * report["float32"]["bytes"]
    keras_accuracy = report["keras"]["accuracy"]
    for variant in ("float32", "float16", "dynamic", "int8"):
        # No more than half a point worse than Keras, and nearly always the same answer.
        assert report[variant]["accuracy"] >= keras_accuracy - 0.005, variant
        assert report[variant]["agreement_with_keras"] >= 0.98, variant
    assert report["float32"]["agreement_with_keras"] == 1.0


def test_serving_default_reads_encoded_images(exported, digits, tmp_path):
    _, report = exported
    reloaded = tf.saved_model.load(report["saved_model"])
    frames, labels = [], []
    for frame, label in digits.test.take(40):
        frames.append(frame.numpy())
        labels.append(int(label))
    encoded = []
    for i, frame in enumerate(frames):
        path = tmp_path / f"{i}.png"
        # Half the images dark ink on white paper, three times larger: the graph must cope.
        Image.fromarray(frame[..., 0]).resize((84, 84)).save(path) if i % 2 else \
            Image.fromarray(255 - frame[..., 0]).resize((84, 84)).save(path)
        encoded.append(path.read_bytes())
    outputs = reloaded.signatures["serving_default"](images=tf.constant(encoded))
    assert outputs["probabilities"].shape == (40, 10)
    hits = (outputs["digit"].numpy() == np.array(labels)).mean()
    assert hits >= 0.85, hits


def test_failed_export_leaves_nothing_behind(trained_run, tmp_path, monkeypatch):
    from serving import export as exporting

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(exporting, "convert_to_tflite", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        digit_ocr.export(trained_run, tmp_path, quiet=True)
    assert list((tmp_path / "digit_ocr").iterdir()) == []


# --- predict ----------------------------------------------------------------------------------


def compose_row(frames, scale=3, gap=12, dark_on_light=True):
    """A strip of digits written in a row, as on a form, from 28x28 frames."""
    tiles = [np.kron(f[..., 0].astype(float), np.ones((scale, scale))) for f in frames]
    row = np.concatenate([np.pad(t, ((gap, gap), (gap // 2, gap // 2))) for t in tiles], axis=1)
    row = np.pad(row, ((8, 8), (16, 16)))
    return (255 - row if dark_on_light else row).astype(np.uint8)


def test_predict_reads_multi_digit_images_of_held_out_digits(trained_run, digits, tmp_path):
    test_frames = [(f.numpy(), int(y)) for f, y in digits.test.skip(40).take(24)]
    files, truths = [], []
    for k in range(6):  # six 4-digit "postcodes", alternating polarity, PNG and JPEG
        chunk = test_frames[4 * k : 4 * k + 4]
        path = tmp_path / f"code{k}.{'jpg' if k % 3 == 2 else 'png'}"
        Image.fromarray(compose_row([f for f, _ in chunk], dark_on_light=k % 2 == 0)).save(path)
        files.append(path)
        truths.append("".join(str(y) for _, y in chunk))
    results = digit_ocr.predict(files, trained_run)
    assert [len(r["text"]) for r in results] == [4] * 6  # segmentation finds every digit
    right = sum(a == b for r, t in zip(results, truths) for a, b in zip(r["text"], t))
    assert right >= 21, (right, [r["text"] for r in results], truths)
    assert all(0.0 < c <= 1.0 for r in results for c in r["confidences"])


def test_every_served_path_reads_the_test_digits_as_evaluate_scores_them(trained_run, exported):
    """The skew check: the test digits as PNG files through the SavedModel, `predict` and the
    LiteRT runner read as the evaluated model reads them."""
    _, report = exported
    figures = {row["path"]: row["value"]
               for row in digit_ocr.served_figures(Path(report["saved_model"]), trained_run)}
    evaluated = figures.pop("evaluate (Keras)")
    assert evaluated == json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]
    for path in ("SavedModel serving_default", "CLI predict", "LiteRT float32"):
        assert figures[path] == evaluated, (path, figures)
    for path in ("LiteRT float16", "LiteRT dynamic", "LiteRT int8"):  # quantised weights
        assert abs(figures[path] - evaluated) <= 0.01, (path, figures)


# --- bad input: one line, exit status 2 -------------------------------------------------------


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(digit_ocr.main, argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err.strip()


def test_missing_and_corrupt_images_are_reported(trained_run, tmp_path, capsys):
    corrupt = tmp_path / "scan.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    for path, problem in ((tmp_path / "nope.png", "no such file"),
                          (corrupt, "not a readable image")):
        code, err = run_main(["predict", str(path), "--run-dir", str(trained_run)], capsys)
        assert code == 2
        assert err.count("\n") == 0 and str(path) in err and problem in err


def test_bad_data_options_are_reported(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    bad_mnist = tmp_path / "mnist"
    bad_mnist.mkdir()
    (bad_mnist / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x09\x99" + bytes(16))
    cases = [(str(empty), "no images"), (str(tmp_path / "missing"), "not 'digits'"),
             (str(bad_mnist), "bad magic number")]
    for data, problem in cases:
        code, err = run_main(["train", "--data", data, "--run-dir", str(tmp_path / "r")], capsys)
        assert code == 2 and err.count("\n") == 0 and problem in err, err


def test_evaluate_before_train_says_so(tmp_path, capsys):
    code, err = run_main(["evaluate", "--run-dir", str(tmp_path / "never")], capsys)
    assert code == 2 and "run `train` first" in err


def test_train_command_mirrors_over_two_logical_cpus(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "apps.digit_ocr", "train", "--strategy", "mirrored", "--devices",
         "2", "--epochs", "2", "--batch-size", "32", "--run-dir", str(tmp_path), "--verbose", "0"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["replicas"] == 2 and run["global_batch_size"] == 64
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] > 0.5


def test_command_line_error_has_no_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "apps.digit_ocr", "predict", str(tmp_path / "gone.png")],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}/gone.png")
