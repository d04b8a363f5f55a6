"""Fraud detection end to end: each model learns normal transactions, the threshold, the exported
SavedModel and .tflite files flag what Keras flags, predict streams CSV files, bad input."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from mirroring import assert_same_adam_weights
from sklearn.metrics import average_precision_score, roc_auc_score

from apps import fraud, runner
from pipelines import tabular, transactions
from serving.litert import LiteRTModel

PROJECT = Path(__file__).resolve().parents[1]
# Short schedules; the VAE's detection keeps improving for longer (its sampled loss is noisy).
TEST_EPOCHS = {"autoencoder": 8, "vae": 20, "rbm": 8}


@pytest.fixture(scope="module")
def splits():
    return tabular.split(tabular.synthetic_table(fraud.SYNTHETIC_ROWS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each model trained briefly on the synthetic transactions: {model: run directory}."""
    root = tmp_path_factory.mktemp("fraud_runs")
    for model_name in fraud.MODELS:
        fraud.train(model_name=model_name, epochs=TEST_EPOCHS[model_name],
                    run_dir=root / model_name, verbose=0)
    return {m: root / m for m in fraud.MODELS}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    model_base = tmp_path_factory.mktemp("saved_models")
    return model_base, fraud.export(runs["autoencoder"], model_base, quiet=True)


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", fraud.MODELS)
def test_each_model_finds_held_out_frauds_far_above_chance_and_untrained(
        model_name, runs, splits):
    trained, run = fraud.load_run(runs[model_name])
    keras.utils.set_random_seed(7)  # the untrained copy's initial weights
    untrained = fraud.build_for(model_name, splits.train.schema,
                                splits.train.normals().features, seed=7)
    test = splits.test
    rate = test.labels.mean()
    trained_ap = average_precision_score(test.labels, fraud.score(trained, test.features))
    untrained_ap = average_precision_score(test.labels, fraud.score(untrained, test.features))
    # Chance PR-AUC is the fraud rate (about 1%). The same architecture with its initial
    # weights (scaling included) must be clearly worse.
    assert trained_ap >= 0.5 and trained_ap >= 25 * rate, (trained_ap, rate)
    assert trained_ap >= untrained_ap + 0.03, (trained_ap, untrained_ap)
    assert roc_auc_score(test.labels, fraud.score(trained, test.features)) >= 0.95
    metrics = json.loads((runs[model_name] / "metrics.json").read_text())
    assert metrics["pr_auc"] == pytest.approx(trained_ap, rel=1e-4)
    assert metrics["f1"] >= 0.4 and metrics["rows"] == len(test)
    assert run["train_normal_rows"] == int((splits.train.labels == 0).sum())


def test_run_directory_has_what_a_user_looks_at(runs):
    for model_name, run_dir in runs.items():
        for name in ("history.csv", "training_curves.png", "pr_curve.png", "roc_curve.png",
                     "score_histogram.png", "best.keras", "run.json", "metrics.json",
                     "evaluation.json"):
            assert (run_dir / name).is_file(), (model_name, name)
        assert len(runner.read_history(run_dir)["epoch"]) == TEST_EPOCHS[model_name]
        assert not (run_dir / "backup").exists()
    history = runner.read_history(runs["autoencoder"])
    assert history["loss"][-1] < history["loss"][0]
    assert (runs["rbm"].parent / "last").read_text().strip() == str(runs["rbm"].resolve())


def test_threshold_is_the_best_f1_on_validation_or_a_normal_quantile():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 1_000), rng.normal(4, 1, 20)
    scores = np.concatenate([normal, anomalous])
    labels = np.r_[np.zeros(1_000, int), np.ones(20, int)]
    threshold, rule = fraud.choose_threshold(scores, labels)
    assert "F1" in rule
    best_f1 = fraud.detection_figures(labels, scores, threshold)["f1"]
    for other in np.linspace(1, 5, 41):
        assert fraud.detection_figures(labels, scores, other)["f1"] <= best_f1 + 1e-12
    threshold, rule = fraud.choose_threshold(normal, None)
    assert "percentile" in rule and (normal > threshold).mean() == pytest.approx(0.005, abs=1e-3)


def test_vae_score_is_deterministic(runs, splits):
    vae, _ = fraud.load_run(runs["vae"])
    rows = splits.test.features[:256]
    np.testing.assert_array_equal(fraud.score(vae, rows), fraud.score(vae, rows))


def test_evaluate_prints_curves_figures_and_a_confusion_table(runs, capsys):
    fraud.main(["evaluate", "--run-dir", str(runs["vae"])])
    out = capsys.readouterr().out
    figures = json.loads((runs["vae"] / "evaluation.json").read_text())
    for text in ("ROC-AUC", "PR-AUC", "precision", "recall", "F1", "true anomaly",
                 "flagged anomaly", f"{figures['roc_auc']:.4f}", "best F1 on the validation"):
        assert text in out, text
    c = figures["confusion"]
    assert c["true_positive"] + c["false_negative"] == figures["anomalies"]
    assert sum(c.values()) == figures["rows"]


def test_compare_trains_every_model_on_one_split_and_prints_one_table(tmp_path, capsys):
    rows = fraud.compare(epochs=1, runs_root=tmp_path, rows=4_000, verbose=0)
    assert [r["model"] for r in rows] == list(fraud.MODELS)
    out = capsys.readouterr().out
    assert "PR-AUC" in out and all(m in out.split("Test split")[-1] for m in fraud.MODELS)


class StepLogs(keras.callbacks.Callback):
    """The logs after each training step (running means of the epoch's metrics)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({name: float(value) for name, value in logs.items()})


@pytest.mark.parametrize("model_name", fraud.MODELS)
def test_mirrored_first_three_steps_match_one_device(model_name, splits):
    rows = splits.train.normals().features[:3 * 128]

    def three_steps(strategy):
        keras.utils.set_random_seed(5)
        with strategy.scope():
            # As fraud.train builds and compiles them, with one explicit learning rate on both
            # sides (train() scales it with the replicas).
            detector = fraud.build_for(model_name, splits.train.schema, rows)
            if model_name == "rbm":
                model = fraud.build_rbm_trainer(detector, learning_rate=fraud.RBM_LEARNING_RATE)
                data = detector.standardize(rows).numpy()  # what fit_detector feeds it
            else:
                model, data = detector, rows
                model.compile(optimizer=keras.optimizers.Adam(fraud.LEARNING_RATE))
        logs = StepLogs()
        model.fit(tabular.batches(data, 128), verbose=0, callbacks=[logs])  # 3 global batches
        return logs.steps, [w.numpy() for w in model.weights]

    mirrored = runner.choose_strategy("mirrored")  # one per process: see runner
    single, single_weights = three_steps(tf.distribute.get_strategy())
    replicated, mirrored_weights = three_steps(mirrored)
    # Steps 2 and 3 start from updated weights and optimizer state (and, for the VAE and the
    # RBM, draw new noise: each replica must slice the global batch's numbers).
    assert len(single) == len(replicated) == 3
    for step, (one, two) in enumerate(zip(single, replicated)):
        assert one.keys() == two.keys()
        for name in one:
            assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-6), (step, name)
    if model_name == "rbm":  # SGD: the update is proportional to the gradient
        for one, two in zip(single_weights, mirrored_weights):
            np.testing.assert_allclose(one, two, atol=1e-5)
    else:
        assert_same_adam_weights(single_weights, mirrored_weights, steps=3,
                                 learning_rate=fraud.LEARNING_RATE, atol=1e-5)


def test_learning_rates_are_per_replica(splits):
    rows = splits.train.normals().features[:256]
    with runner.choose_strategy("mirrored").scope():
        trainer = fraud.build_rbm_trainer(fraud.build_for("rbm", splits.train.schema, rows))
    assert trainer.optimizer.get_config()["learning_rate"] == \
        pytest.approx(2 * fraud.RBM_LEARNING_RATE)


def test_training_killed_mid_epoch_resumes_exactly(tmp_path, monkeypatch, capsys):
    from apps import backup

    def train(run_dir):
        return fraud.train(model_name="vae", epochs=2, rows=4_000, run_dir=run_dir, verbose=0,
                           backup_every=1)

    uninterrupted = train(tmp_path / "whole")
    saved = backup.StepBackup.save

    def killed_after_a_mid_epoch_backup(self, position):
        saved(self, position)
        if position.epoch == 1 and position.batch == 5:
            raise KeyboardInterrupt  # as a kill would, right after the backup was written

    monkeypatch.setattr(backup.StepBackup, "save", killed_after_a_mid_epoch_backup)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(run_dir)
    steps_per_epoch = uninterrupted["steps"] // 2
    assert backup.latest_position(runner.backup_dir(run_dir)) == \
        backup.Position(epoch=1, batch=5, step=steps_per_epoch + 5)
    monkeypatch.setattr(backup.StepBackup, "save", saved)
    resumed = train(run_dir)
    assert f"epoch 2, 5 batches in, step {steps_per_epoch + 5}" in capsys.readouterr().out
    # The same run as one never killed: steps, history (the VAE's sampled loss included),
    # weights, figures.
    assert resumed["steps"] == uninterrupted["steps"] == 2 * steps_per_epoch
    assert (run_dir / "history.csv").read_text() == (tmp_path / "whole/history.csv").read_text()
    weights = [fraud.load_detector(d).get_weights() for d in (tmp_path / "whole", run_dir)]
    for one, two in zip(*weights):
        np.testing.assert_array_equal(one, two)
    assert resumed["pr_auc"] == uninterrupted["pr_auc"]
    assert not (run_dir / "backup").exists()


# --- export -----------------------------------------------------------------------------------


def test_export_is_a_complete_tf_serving_version(exported):
    model_base, report = exported
    version = Path(report["saved_model"])
    assert version.parent == model_base / "fraud" and version.name.isdigit()
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    schema = json.loads((version / "assets.extra" / "schema.json").read_text())
    assert schema["inputs"] == list(transactions.FEATURES)
    assert schema["threshold"] == report["threshold"]
    assert not [p for p in (model_base / "fraud").iterdir() if not p.name.isdigit()]


def test_reloaded_saved_model_flags_what_keras_flags(runs, exported, splits):
    _, report = exported
    detector, run = fraud.load_run(runs["autoencoder"])
    test = splits.test
    keras_scores = fraud.score(detector, test.features)
    keras_flags = keras_scores > run["threshold"]
    assert 0 < keras_flags.sum() < len(keras_flags) / 10

    serving = tf.saved_model.load(report["saved_model"]).signatures["serving_default"]
    assert sorted(serving.structured_input_signature[1]) == sorted(transactions.FEATURES)
    served = serving(**{name: tf.constant(column) for name, column in
                        fraud.columns_of(test.features, test.schema).items()})
    assert served["is_anomaly"].dtype == tf.bool
    np.testing.assert_array_equal(served["is_anomaly"].numpy(), keras_flags)
    np.testing.assert_allclose(served["score"].numpy(), keras_scores, rtol=1e-4, atol=1e-5)


def test_tflite_float32_and_int8_run_in_litert(runs, exported, splits):
    _, report = exported
    detector, run = fraud.load_run(runs["autoencoder"])
    test = splits.test
    keras_scores = fraud.score(detector, test.features)
    extra = Path(report["saved_model"]) / "assets.extra"
    scaling = json.loads((extra / "schema.json").read_text())["scaling"]
    rows = test.features[:500]
    # float32 takes raw named columns, like serving_default.
    raw = LiteRTModel(extra / "fraud_float32.tflite").signature("serving_default")
    out = raw(**fraud.columns_of(rows, test.schema))
    assert set(out) == {"score", "is_anomaly"}
    np.testing.assert_allclose(out["score"], keras_scores[:500], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["is_anomaly"], keras_scores[:500] > run["threshold"])
    assert report["float32"]["flags_as_keras"] == 1.0
    # int8 takes standardised rows, made with numpy from schema.json's statistics.
    quantised = LiteRTModel(extra / "fraud_int8.tflite").signature("score_standardized")
    assert quantised.input_details["features"]["dtype"] == np.int8
    out = quantised(features=fraud.standardize(rows, scaling))
    assert np.corrcoef(out["score"], np.minimum(keras_scores[:500], out["score"].max()))[0, 1] > 0.9
    int8 = report["int8"]
    # Quantised: the ranking of frauds survives and the flags mostly agree.
    assert int8["roc_auc"] >= report["keras"]["roc_auc"] - 0.02, int8
    assert int8["pr_auc"] >= report["keras"]["pr_auc"] - 0.1, int8
    assert int8["flags_as_keras"] >= 0.98, int8


def test_failed_export_leaves_nothing_behind(runs, tmp_path, monkeypatch):
    from serving import export as exporting

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(exporting, "convert_to_tflite", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        fraud.export(runs["autoencoder"], tmp_path, quiet=True)
    assert list((tmp_path / "fraud").iterdir()) == []


# --- predict ----------------------------------------------------------------------------------


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_streams_rows_back_with_score_and_flag(runs, tmp_path, monkeypatch):
    source = tmp_path / "new_month.csv"
    transactions.write_csv(source, rows=3_000, seed=11)  # transactions no model has seen
    monkeypatch.setattr(fraud, "PREDICT_CHUNK_ROWS", 700)  # several chunks
    monkeypatch.setattr(runner, "RUNS_ROOT", runs["rbm"].parent.parent)  # "last" lives here
    (runs["rbm"].parent.parent / "fraud").mkdir(exist_ok=True)
    (runs["rbm"].parent.parent / "fraud" / "last").write_text(str(runs["vae"]) + "\n")

    output = tmp_path / "out" / "scored.csv"
    result = fraud.predict(source, output, quiet=True)  # the last trained run: the VAE
    assert result["model"] == "vae" and result["rows"] == 3_000
    rows = read_rows(output)
    assert list(rows[0])[-2:] == ["score", "is_anomaly"] and len(rows) == 3_000
    assert [r["card_id"] for r in rows] == [r["card_id"] for r in read_rows(source)]

    vae, run = fraud.load_run(runs["vae"])
    table = tabular.read_csv(source, tabular.SYNTHETIC)
    expected = fraud.score(vae, table.features)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, rtol=1e-4, atol=1e-4)
    flags = np.array([int(r["is_anomaly"]) for r in rows])
    np.testing.assert_array_equal(flags, expected > run["threshold"])
    frauds = np.array([int(r["is_fraud"]) for r in rows]) == 1
    assert flags[frauds].mean() >= 0.5 and flags[~frauds].mean() <= 0.05
    assert [p.name for p in output.parent.iterdir()] == ["scored.csv"]


def test_predict_with_a_bad_row_keeps_the_old_output_and_leaves_no_partial_file(
        runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fraud, "PREDICT_CHUNK_ROWS", 500)
    source = tmp_path / "feed.csv"
    transactions.write_csv(source, rows=2_000, seed=12)
    lines = source.read_text().splitlines()
    cells = lines[1_500].split(",")
    cells[transactions.COLUMNS.index("amount_ratio")] = "12x"
    lines[1_500] = ",".join(cells)  # file line 1,501, after two chunks were written
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "scored.csv"
    output.write_text("yesterday's results\n")
    code, err = run_main(["predict", str(source), "--output", str(output), "--run-dir",
                          str(runs["autoencoder"])], capsys)
    assert code == 2 and err.splitlines()[-1] == (
        f"error: {source}, line 1501, column 'amount_ratio': '12x' is not a number")
    assert output.read_text() == "yesterday's results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feed.csv", "scored.csv"]


# --- other data and bad input -----------------------------------------------------------------


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(fraud.main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def test_train_on_a_labelled_csv_uses_its_normal_rows_only(tmp_path):
    source = tmp_path / "cards.csv"
    transactions.write_csv(source, rows=3_000, seed=5)
    fraud.train(str(source), epochs=1, run_dir=tmp_path / "run", verbose=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    table = tabular.load_table(str(source))
    oldest = np.argsort(table.times, kind="stable")[: int(len(table) * tabular.TRAIN_SHARE)]
    assert run["split"] == "time" and run["schema"]["label"] == "is_fraud"
    assert run["train_normal_rows"] == int((table.labels[oldest] == 0).sum()) < len(oldest)


def test_bad_csv_files_end_in_one_line_and_status_2(tmp_path, capsys):
    header = ",".join(transactions.COLUMNS)
    good = "1.0,3,0,12.5,0.8,14.2,2.1,1.5,3600,0,0.3,0"
    cases = {
        "empty.csv": ("", "line 1: empty file"),
        "missing.csv": (header.replace(",hour", "") + "\n" + good + "\n",
                        "line 1: missing column 'hour'"),
        "text.csv": (f"{header}\n{good}\n{good.replace('0.8', 'twelve')}\n",
                     "line 3, column 'amount_ratio': 'twelve' is not a number"),
        "nan.csv": (f"{header}\n{good.replace('2.1', 'nan')}\n",
                    "line 2, column 'distance_km': NaN"),
    }
    for name, (text, problem) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        code, err = run_main(["train", "--data", str(path), "--run-dir", str(tmp_path / "r")],
                             capsys)
        assert code == 2 and err.startswith(f"error: {path}, {problem}"), err
        assert "\n" not in err


def test_command_line_errors_have_no_traceback(tmp_path):
    (tmp_path / "bad.csv").write_text("amount,hour\n1,2\nx,3\n")
    for argv in (["train", "--data", str(tmp_path / "bad.csv")],
                 ["evaluate", "--run-dir", str(tmp_path / "never")]):
        completed = subprocess.run([sys.executable, "-m", "apps.fraud", *argv], cwd=PROJECT,
                                   capture_output=True, text=True, timeout=120)
        assert completed.returncode == 2, completed.stderr[-2000:]
        assert "Traceback" not in completed.stderr
        last = completed.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and str(tmp_path) in last, last
