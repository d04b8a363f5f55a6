"""Fraud detection end to end: each model learns normal transactions, the threshold, the exported
SavedModel and .tflite files flag what Keras flags, predict streams CSV files, bad input."""

import csv
import json
import shutil
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
from models import anomaly
from pipelines import tabular, transactions
from serving import litert_fraud
from serving.litert import LiteRTModel

PROJECT = Path(__file__).resolve().parents[1]
CREDITCARD = PROJECT.parent / "shared/data/creditcard-fraud-sample/creditcard_sample.csv"
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
        fraud.train(fraud.TrainConfig(model=model_name, epochs=TEST_EPOCHS[model_name],
                                      run_dir=root / model_name, verbose=0))
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
    schema = splits.train.schema
    untrained = anomaly.build_detector(model_name, schema.features, schema.log_features,
                                       splits.train.normals().features, seed=7)
    test = splits.test
    rate = test.labels.mean()
    trained_ap = average_precision_score(test.labels, anomaly.score(trained, test.features))
    untrained_ap = average_precision_score(test.labels, anomaly.score(untrained, test.features))
    # Chance PR-AUC is the fraud rate (about 1%). The same architecture with its initial
    # weights (scaling included) must be clearly worse.
    assert trained_ap >= 0.5 and trained_ap >= 25 * rate, (trained_ap, rate)
    assert trained_ap >= untrained_ap + 0.03, (trained_ap, untrained_ap)
    assert roc_auc_score(test.labels, anomaly.score(trained, test.features)) >= 0.95
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
    # The run trained last (by the `runs` fixture): what evaluate, predict and export read.
    assert runner.last_run_file("fraud").read_text().strip() == str(runs["rbm"].resolve())


def test_threshold_is_the_best_f1_on_validation_or_a_normal_quantile():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 1_000), rng.normal(4, 1, 20)
    scores = np.concatenate([normal, anomalous])
    labels = np.r_[np.zeros(1_000, int), np.ones(20, int)]
    threshold, rule = anomaly.choose_threshold(scores, labels)
    assert "F1" in rule

    def f1_at(cut):  # judged by scikit-learn, flags as served: score > threshold
        return f1_score(labels, scores > cut)

    # Every distinct set of flags: a cut below the lowest score and one between each pair of
    # neighbouring scores. None has a higher F1 than the chosen threshold's.
    ordered = np.sort(scores)
    cuts = np.r_[ordered[0] - 1, (ordered[1:] + ordered[:-1]) / 2]
    best_f1 = f1_at(threshold)
    assert best_f1 == pytest.approx(max(f1_at(cut) for cut in cuts), abs=1e-12)
    assert best_f1 > 0.5
    assert anomaly.detection_figures(labels, scores, threshold)["f1"] == pytest.approx(best_f1)
    threshold, rule = anomaly.choose_threshold(normal, None)
    assert "percentile" in rule and (normal > threshold).mean() == pytest.approx(0.005, abs=1e-3)


def test_vae_score_is_the_negative_elbo_at_the_posterior_mean(splits):
    """The score by hand in numpy, on set weights: -log N(z; mu, sigma^2) of the standardised
    row z under the decoder fed the posterior mean (without the constant, log sigma^2 floored
    at MIN_LOG_VARIANCE), plus KL(N(m, s^2) || N(0, I))."""
    schema = splits.train.schema
    vae = anomaly.build_detector("vae", schema.features, schema.log_features,
                                 splits.train.normals().features)
    rng = np.random.default_rng(3)
    dense = [*vae.encoder.layers, *vae.decoder.layers]
    weights = [[rng.normal(0, 0.3, layer.kernel.shape).astype("float32"),
                rng.normal(0, 0.1, layer.bias.shape).astype("float32")] for layer in dense]
    features = len(schema.features)
    weights[3][1][features:] = np.linspace(-3, 1, features)  # some log-variances below -2
    for layer, values in zip(dense, weights):
        layer.set_weights(values)
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = [[a.astype("float64") for a in w] for w in weights]

    rows = splits.test.features[:256]
    log_mask = np.array([name in schema.log_features for name in schema.features])
    logged = np.where(log_mask, np.log1p(np.maximum(rows, 0)), rows)
    z = (logged - np.array(vae.mean)) / np.sqrt(np.array(vae.variance))
    np.testing.assert_allclose(vae.standardize(rows).numpy(), z, rtol=2e-6, atol=2e-6)

    z = z.astype("float32")
    code_mean, code_log_variance = np.split(np.tanh(z @ w1 + b1) @ w2 + b2, 2, axis=1)
    mean, log_variance = np.split(np.tanh(code_mean @ w3 + b3) @ w4 + b4, 2, axis=1)
    log_variance = np.maximum(log_variance, anomaly.MIN_LOG_VARIANCE)
    nll = 0.5 * ((z - mean) ** 2 * np.exp(-log_variance) + log_variance).sum(axis=1)
    kl = -0.5 * (1 + code_log_variance - code_mean**2 - np.exp(code_log_variance)).sum(axis=1)
    assert (log_variance == anomaly.MIN_LOG_VARIANCE).any() and (kl > 0).all()
    np.testing.assert_allclose(vae.score_standardized(z).numpy(), nll + kl, rtol=1e-5,
                               atol=1e-5)


def test_trained_vae_score_is_deterministic(runs, splits):
    vae, _ = fraud.load_run(runs["vae"])
    rows = splits.test.features[:256]
    np.testing.assert_array_equal(anomaly.score(vae, rows), anomaly.score(vae, rows))


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
    rows = fraud.compare(fraud.TrainConfig(epochs=1, rows=4_000, verbose=0), runs_root=tmp_path)
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
            schema = splits.train.schema
            detector = anomaly.build_detector(model_name, schema.features, schema.log_features,
                                              rows)
            if model_name == "rbm":
                model = anomaly.rbm_trainer(detector, fraud.RBM_LEARNING_RATE)
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


def test_learning_rates_are_per_replica(tmp_path, monkeypatch):
    """Rates are stated for one replica: two replicas train at twice the rate."""
    trainers = []
    make_trainer = anomaly.rbm_trainer
    monkeypatch.setattr(anomaly, "rbm_trainer",
                        lambda *args: trainers.append(make_trainer(*args)) or trainers[-1])
    for model_name in ("autoencoder", "rbm"):
        fraud.train(fraud.TrainConfig(model=model_name, strategy="mirrored", epochs=1,
                                      rows=2_000, run_dir=tmp_path / model_name, verbose=0))
    adam = keras.saving.load_model(tmp_path / "autoencoder" / "best.keras").optimizer
    assert float(adam.learning_rate) == pytest.approx(2 * fraud.LEARNING_RATE)
    assert len(trainers) == 1 and trainers[0].optimizer.get_config()["learning_rate"] == \
        pytest.approx(2 * fraud.RBM_LEARNING_RATE)


def test_training_killed_mid_epoch_resumes_exactly(tmp_path, kill_after_backup, capsys):
    from apps import backup

    def train(run_dir):
        return fraud.train(fraud.TrainConfig(model="vae", epochs=2, rows=4_000, run_dir=run_dir,
                                             verbose=0, backup_every=1))

    uninterrupted = train(tmp_path / "whole")
    run_dir = tmp_path / "run"
    kill_after_backup(lambda: train(run_dir), epoch=1, batch=5)
    steps_per_epoch = uninterrupted["steps"] // 2
    assert backup.latest_position(runner.backup_dir(run_dir)) == \
        backup.Position(epoch=1, batch=5, step=steps_per_epoch + 5)
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
    keras_scores = anomaly.score(detector, test.features)
    keras_flags = keras_scores > run["threshold"]
    assert 0 < keras_flags.sum() < len(keras_flags) / 10

    serving = tf.saved_model.load(report["saved_model"]).signatures["serving_default"]
    assert sorted(serving.structured_input_signature[1]) == sorted(transactions.FEATURES)
    served = serving(**{name: tf.constant(column) for name, column in
                        litert_fraud.columns_of(test.features, test.schema.features).items()})
    assert served["is_anomaly"].dtype == tf.bool
    np.testing.assert_array_equal(served["is_anomaly"].numpy(), keras_flags)
    np.testing.assert_allclose(served["score"].numpy(), keras_scores, rtol=1e-4, atol=1e-5)


def test_tflite_float32_and_int8_run_in_litert(runs, exported, splits):
    _, report = exported
    detector, run = fraud.load_run(runs["autoencoder"])
    test = splits.test
    keras_scores = anomaly.score(detector, test.features)
    extra = Path(report["saved_model"]) / "assets.extra"
    scaling = json.loads((extra / "schema.json").read_text())["scaling"]
    rows = test.features[:500]
    # float32 takes raw named columns, like serving_default.
    raw = LiteRTModel(extra / "fraud_float32.tflite").signature("serving_default")
    out = raw(**litert_fraud.columns_of(rows, test.schema.features))
    assert set(out) == {"score", "is_anomaly"}
    np.testing.assert_allclose(out["score"], keras_scores[:500], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["is_anomaly"], keras_scores[:500] > run["threshold"])
    assert report["float32"]["flags_as_keras"] == 1.0
    # int8 takes standardised rows, made with numpy from schema.json's statistics.
    quantised = LiteRTModel(extra / "fraud_int8.tflite").signature("score_standardized")
    assert quantised.input_details["features"]["dtype"] == np.int8
    out = quantised(features=litert_fraud.standardize(rows, scaling))
    assert np.corrcoef(out["score"], np.minimum(keras_scores[:500], out["score"].max()))[0, 1] > 0.9
    int8 = report["int8"]
    # Quantised: the ranking of frauds survives and the flags mostly agree.
    assert int8["roc_auc"] >= report["keras"]["roc_auc"] - 0.02, int8
    assert int8["pr_auc"] >= report["keras"]["pr_auc"] - 0.1, int8
    assert int8["flags_as_keras"] >= 0.98, int8


def test_every_served_path_scores_the_test_rows_as_evaluate_does(runs, exported, splits):
    """The skew check: the test split as a user's CSV file through serving_default (a TF Serving
    client's JSON rows), `predict` and the LiteRT runner, beside evaluate's figures."""
    _, report = exported
    rows = fraud.served_figures(Path(report["saved_model"]), runs["autoencoder"])
    value = {(row["path"], row["figure"]): row["value"] for row in rows}
    evaluated = json.loads((runs["autoencoder"] / "evaluation.json").read_text())
    assert rows[0]["path"] == "evaluate (Keras)" and {row["examples"] for row in rows} == {6_000}
    assert value["evaluate (Keras)", "test PR-AUC"] == evaluated["pr_auc"]
    figures = ("test ROC-AUC", "test PR-AUC", "test F1 at the threshold")
    # The same float32 computation: the same figures, flags and (to float32 rounding) scores.
    for path in ("SavedModel serving_default", "CLI predict", "LiteRT float32"):
        for figure in figures:
            assert value[path, figure] == value["evaluate (Keras)", figure], (path, figure)
        assert value[path, "flags as evaluate's"] == 1.0, path
        assert value[path, "largest |score - evaluate's|"] <= 1e-5, path
    # int8 (README): the output scale saturates above the normals' scores, tying top frauds.
    int8 = {figure: value["LiteRT int8", figure] - value["evaluate (Keras)", figure]
            for figure in figures}
    assert int8["test ROC-AUC"] >= -0.005 and int8["test PR-AUC"] >= -0.05, int8
    assert abs(int8["test F1 at the threshold"]) <= 0.05, int8
    assert value["LiteRT int8", "flags as evaluate's"] >= 0.99


@pytest.mark.parametrize("data", ["embedded", "creditcard"])
def test_numpy_standardisation_is_the_detectors_on_real_rows(data, splits):
    """The LiteRT client's numpy scaling (the int8 model's input) and the detector's in-graph
    log1p and standardisation agree to float32 rounding on every row of the data."""
    if data == "creditcard":
        if not CREDITCARD.is_file():
            pytest.skip(f"{CREDITCARD} is not here")
        splits = tabular.split(tabular.load_table(str(CREDITCARD)))
    schema = splits.train.schema
    detector = anomaly.build_detector("autoencoder", schema.features, schema.log_features,
                                      splits.train.normals().features)
    rows = np.concatenate([part.features for part in (splits.train, splits.validation,
                                                      splits.test)])
    scaling = {"log_mask": detector.log_mask, "mean": detector.mean,
               "variance": detector.variance}
    np.testing.assert_allclose(litert_fraud.standardize(rows, scaling),
                               detector.standardize(rows).numpy(), rtol=2e-6, atol=2e-6)


def test_int8_flags_follow_its_scores_when_they_span_more_than_255(splits, tmp_path):
    """TFLite compares int8 tensors only below a scale of 1: scores spanning thousands (the VAE's
    and the RBM's on ULB's rows) flagged nothing until the int8 endpoint flagged in a unit of
    its calibrated range. Here an untrained autoencoder on tightly scaled rows scores so."""
    from serving import export as export_lib

    keras.utils.set_random_seed(0)
    schema = splits.train.schema
    base = anomaly.build_detector("autoencoder", schema.features, schema.log_features,
                                  splits.train.normals().features)
    detector = anomaly.Autoencoder.from_config(
        {**base.get_config(), "variance": [v / 100 for v in base.variance]})
    detector(splits.test.features[:1])  # creates the weights
    scaling = {"log_mask": detector.log_mask, "mean": detector.mean,
               "variance": detector.variance}
    rows = litert_fraud.standardize(splits.test.features[:2_000], scaling)
    scores = detector.score_standardized(rows).numpy()
    threshold = float(np.percentile(scores, 90))
    assert scores.max() > 255
    fraud.serving_archive(detector, schema, threshold, rows[:500]).write_out(tmp_path / "1",
                                                                              verbose=False)
    int8 = export_lib.convert_to_tflite(tmp_path / "1", fraud.STANDARDIZED_SIGNATURE, "int8",
                                        (row[None] for row in rows[:500]))
    out = LiteRTModel(int8).signature(fraud.STANDARDIZED_SIGNATURE)(features=rows)
    assert (out["is_anomaly"] == (out["score"] > threshold)).mean() >= 0.995
    assert (out["is_anomaly"] == (scores > threshold)).mean() >= 0.99


@pytest.mark.parametrize("failing", ["int8", "float32"])
def test_failed_export_leaves_nothing_behind(failing, runs, tmp_path, monkeypatch):
    from serving import export as export_lib

    convert = export_lib.convert_to_tflite

    def broken(saved_model, signature, variant, *args):
        if variant == failing:  # int8 fails before the version is written, float32 within
            raise RuntimeError("converter crashed")
        return convert(saved_model, signature, variant, *args)

    monkeypatch.setattr(export_lib, "convert_to_tflite", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        fraud.export(runs["autoencoder"], tmp_path, quiet=True)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# --- predict ----------------------------------------------------------------------------------


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_streams_rows_back_with_score_and_flag(runs, tmp_path, monkeypatch):
    source = tmp_path / "new_month.csv"
    transactions.write_csv(source, rows=3_000, seed=11)  # transactions no model has seen
    monkeypatch.setattr(fraud, "PREDICT_CHUNK_ROWS", 700)  # several chunks
    monkeypatch.setattr(runner, "RUNS_ROOT", tmp_path / "runs")  # LAST lives here
    runner.RunDir(runs["vae"]).mark_last("fraud")

    output = tmp_path / "out" / "scored.csv"
    result = fraud.predict(source, output, quiet=True)  # the last trained run: the VAE
    assert result["model"] == "vae" and result["rows"] == 3_000
    rows = read_rows(output)
    assert list(rows[0])[-2:] == ["score", "is_anomaly"] and len(rows) == 3_000
    assert [r["card_id"] for r in rows] == [r["card_id"] for r in read_rows(source)]

    vae, run = fraud.load_run(runs["vae"])
    table = tabular.read_csv(source, tabular.SYNTHETIC)
    expected = anomaly.score(vae, table.features)
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
    fraud.train(fraud.TrainConfig(data=str(source), epochs=1, run_dir=tmp_path / "run", verbose=0))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    table = tabular.load_table(str(source))
    oldest = np.argsort(table.times, kind="stable")[: int(len(table) * tabular.TRAIN_SHARE)]
    assert run["split"] == "time" and run["schema"]["label"] == "is_fraud"
    assert run["train_normal_rows"] == int((table.labels[oldest] == 0).sum()) < len(oldest)


def test_command_line_fills_the_train_config():
    args = fraud.parse_args(["train", "--model", "vae", "--time", "ts", "--label", "y",
                             "--rows", "500", "--epochs", "3"])
    config = runner.config_from_args(fraud.TrainConfig, args)
    assert (config.model, config.time_column, config.label, config.rows, config.epochs) == (
        "vae", "ts", "y", 500, 3)
    assert config.batch_size is None and config.seed == fraud.SEED  # None: auto_batch_size
    sized = fraud.parse_args(["train", "--batch-size", "32"])
    assert runner.config_from_args(fraud.TrainConfig, sized).batch_size == 32
    assert fraud.parse_args(["evaluate"]).model is None  # the run trained last
    with pytest.raises(runner.UsageError, match="--model gan"):
        fraud.TrainConfig(model="gan")


def test_a_run_whose_training_did_not_finish_is_refused(tmp_path):
    shutil.copy(PROJECT / "tests/fixtures/checkpoints_v0/fraud_autoencoder.keras",
                tmp_path / "best.keras")
    (tmp_path / "run.json").write_text('{"app": "fraud", "model": "autoencoder"}\n')
    with pytest.raises(runner.UsageError, match="training did not finish"):
        fraud.load_run(tmp_path)


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
