"""Fraud and anomaly detection: models that learn what normal looks like, and flag what is not.

    python -m apps.fraud train                          # dense autoencoder, synthetic card data
    python -m apps.fraud train --model vae --data creditcard.csv   # ULB's schema, read as is
    python -m apps.fraud train --compare                # all three models, one table
    python -m apps.fraud evaluate
    python -m apps.fraud predict transactions.csv --output scored.csv
    python -m apps.fraud export                         # -> saved_models/fraud/<version>/

The detectors are defined in `models/anomaly.py`: a dense autoencoder (score: reconstruction
error), a variational autoencoder (score: negative evidence lower bound at the posterior mean)
and a Gaussian-Bernoulli RBM (score: free energy). Each trains on the NORMAL rows only and scores
a row by how badly it fits what it learned; each reads raw rows (the scaling lives inside the
model), so the exported SavedModel takes rows as a client has them.

The threshold that turns a score into a flag is chosen on the validation split (the F1-best
threshold when it holds anomalies, else the 99.5th percentile of its normal scores) and is baked
into the export. The same labelled validation rows pick the best epoch
(`models.anomaly.ValidationDetection`): an autoencoder's detection peaks and then falls while its
reconstruction loss still improves.
"""

import argparse
import csv
import dataclasses
import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import runner
from apps.runner import UsageError
from models import anomaly
from models.anomaly import STANDARDIZED_SIGNATURE
from pipelines import DataError, tabular
from serving import export as export_lib
from serving.litert_fraud import input_name, score_rows, standardize

APP = "fraud"
MODELS = ("autoencoder", "vae", "rbm")
DEFAULT_MODEL = "autoencoder"
DEFAULT_DATA = "synthetic"
SYNTHETIC_ROWS = 30_000
DATA_SEED = 0  # seeds the synthetic transactions
EPOCHS = 20
BATCH_SIZE = 256  # per replica, at most: see auto_batch_size
MIN_STEPS_PER_EPOCH = 20  # small data sets get smaller batches rather than 2 steps an epoch
# Learning rates are per replica: N replicas train at N times these (runner.scaled_learning_rate).
LEARNING_RATE = 1e-3  # Adam, autoencoder and VAE
RBM_BATCH_SIZE = 64  # CD-1 updates are noisy estimates: more of them per epoch
RBM_LEARNING_RATE = 1e-2  # SGD; Gaussian visible units want smaller steps than binary ones
SEED = 42
PREDICT_CHUNK_ROWS = 8_192
MODEL_BASE = Path("saved_models")
TFLITE_VARIANTS = ("float32", "int8")  # float16 and dynamic add nothing for a model this small
REPRESENTATIVE_ROWS = 500


@dataclasses.dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. `batch_size` None: `auto_batch_size`, decided on the data. `label`
    and `time_column` name a CSV's columns (None: 'label' / 'time' when present); `rows`: how
    many synthetic transactions to generate."""

    data: str = DEFAULT_DATA
    model: str = DEFAULT_MODEL
    epochs: int = EPOCHS
    batch_size: int | None = None
    label: str | None = None
    time_column: str | None = None
    rows: int = SYNTHETIC_ROWS
    seed: int = SEED

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose from {', '.join(MODELS)}")


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


def auto_batch_size(train_rows: int, model_name: str = DEFAULT_MODEL) -> int:
    """The model's batch size, or less so that an epoch has MIN_STEPS_PER_EPOCH steps (a
    sample of 600 normal rows trains in batches of 30)."""
    largest = RBM_BATCH_SIZE if model_name == "rbm" else BATCH_SIZE
    return int(min(largest, max(16, train_rows // MIN_STEPS_PER_EPOCH)))


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def load_data(run: dict) -> tabular.Splits:
    """The data of a run (its config, or its run.json), split the way training split it."""
    # (label_option, time_option: the names in a run.json written before TrainConfig)
    table = tabular.load_table(run["data"], label=run.get("label", run.get("label_option")),
                               time=run.get("time_column", run.get("time_option")),
                               rows=run["rows"], seed=DATA_SEED)
    splits = tabular.split(table)
    tabular.check_trainable(splits, run["data"])
    return splits


def fit_detector(run: runner.TrainingRun, detector: anomaly.AnomalyDetector,
                 splits: tabular.Splits) -> int:
    """Trains on the training normals; returns the number of steps. The best epoch: the
    highest validation PR-AUC when the validation split holds anomalies, else the lowest
    validation loss (of the normals). Call it in the strategy's scope."""
    train_rows = splits.train.normals().features
    validation_rows = splits.validation.normals().features
    if run.config.model == "rbm":
        # The RBM trainer sees standardised rows; the detector standardises inside.
        train_rows, validation_rows = (detector.standardize(rows).numpy()
                                       for rows in (train_rows, validation_rows))

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return tabular.batches(train_rows, run.global_batch, shuffle=True,
                               seed=run.config.seed + epoch)

    fit_options = {"steps_per_epoch": -(-len(train_rows) // run.global_batch),
                   "validation_data": tabular.batches(validation_rows, run.global_batch)}
    labels = splits.validation.labels
    labelled = splits.validation if labels is not None and 0 < labels.sum() < len(labels) else None
    if run.config.model == "rbm":
        return fit_rbm(run, detector, epoch_batches, labelled, fit_options)
    detector.compile(optimizer=keras.optimizers.Adam(run.scaled_learning_rate(LEARNING_RATE)))
    if labelled is None:
        return run.fit(detector, epoch_batches, **fit_options, monitor="val_loss", mode="min")
    return run.fit(detector, epoch_batches, **fit_options, monitor="val_pr_auc", mode="max",
                   callbacks=[anomaly.ValidationDetection(detector, labelled)])


def fit_rbm(run: runner.TrainingRun, detector: anomaly.AnomalyDetector, epoch_batches,
            labelled: tabular.Table | None, fit_options: dict) -> int:
    """CD-k on standardised rows. The fitted model is the trainer: the detector's best.keras
    is saved here, not by `run.fit`. Without labelled validation rows the last epoch is kept:
    free energies of different epochs differ by the unknown log partition function, so their
    values cannot pick an epoch (their ranking of rows can)."""
    trainer = anomaly.rbm_trainer(detector, run.scaled_learning_rate(RBM_LEARNING_RATE))
    checkpoint = run.path / "best.keras"
    selection = []
    if labelled is not None:
        best = runner.best_so_far(run.path, "val_pr_auc") if run.resumed is not None else None
        selection = [anomaly.ValidationDetection(detector, labelled, save_to=checkpoint, best=best)]
    steps = run.fit(trainer, epoch_batches, **fit_options, monitor=None, callbacks=selection)
    if labelled is None:
        detector.save(checkpoint)
    return steps


def train(config: TrainConfig | None = None) -> dict:
    """Trains `config.model` on the normal rows of the data's training split, chooses the
    threshold on validation, reports on test. Returns the test figures."""
    config = config or TrainConfig()
    splits = load_data(dataclasses.asdict(config))
    schema, train_normals = splits.train.schema, splits.train.normals()
    if config.batch_size is None:
        config = dataclasses.replace(
            config, batch_size=auto_batch_size(len(train_normals), config.model))
    run = runner.TrainingRun(APP, config, default_run_dir(config.model))
    run.start(source=splits.train.name, schema=schema.to_json(), split=splits.by,
              train_normal_rows=len(train_normals), validation_rows=len(splits.validation),
              test_rows=len(splits.test))
    with run.strategy.scope():
        detector = anomaly.build_detector(config.model, schema.features, schema.log_features,
                                          train_normals.features, config.seed)
        steps = fit_detector(run, detector, splits)

    best = load_detector(run.path)
    threshold, rule = anomaly.choose_threshold(
        anomaly.score(best, splits.validation.features), splits.validation.labels)
    # With the threshold in run.json the run is finished (`load_run`).
    run.dir.write_config(run.dir.config() | {"threshold": threshold, "threshold_rule": rule,
                                             "train_seconds": run.training_seconds})
    name = f"{APP} {config.model} on {splits.train.name}"
    if splits.test.labels is None:  # nothing to measure against: how much gets flagged
        flagged = float((anomaly.score(best, splits.test.features) > threshold).mean())
        print(f"{name} (no labels): {flagged:.2%} of the test rows flagged at threshold"
              f" {threshold:.4g}; run directory {run.path}")
        return run.finish({"model": config.model, "data": config.data,
                           "rows": len(splits.test), "flag_rate": flagged, "steps": steps})
    metrics = held_out_metrics(best, splits, run.dir.config(), run.path) | {"steps": steps}
    print(f"{name}: test ROC-AUC {four_places(metrics['roc_auc'])},"
          f" PR-AUC {four_places(metrics['pr_auc'])} (anomaly rate"
          f" {metrics['anomaly_rate']:.4f}), F1 {metrics['f1']:.3f} at threshold"
          f" {threshold:.4g}; run directory {run.path}")
    return run.finish(metrics)


def four_places(value) -> str:
    """A figure that may be missing (the AUCs of a one-class split): "-" or "0.1234"."""
    return "-" if value is None else f"{value:.4f}"


def compare(config: TrainConfig | None = None, runs_root: Path | None = None) -> list[dict]:
    """`train --compare`: every model on the same split; one table."""
    config = config or TrainConfig()
    runs_root = Path(runs_root or runner.RUNS_ROOT / APP)
    rows = []
    for model_name in MODELS:
        print(f"\n=== {model_name} ===")
        run_dir = runs_root / model_name
        metrics = train(dataclasses.replace(config, model=model_name, run_dir=run_dir))
        seconds = runner.RunDir(run_dir).config()["train_seconds"]
        rows.append({"model": model_name, "ROC-AUC": four_places(metrics["roc_auc"]),
                     "PR-AUC": four_places(metrics["pr_auc"]),
                     "precision": f"{metrics['precision']:.3f}",
                     "recall": f"{metrics['recall']:.3f}", "F1": f"{metrics['f1']:.3f}",
                     "train s": f"{seconds:.0f}"})
    print(f"\nTest split of {config.data} ({metrics['rows']} rows, {metrics['anomalies']}"
          " anomalies, thresholds chosen on validation)")
    runner.print_table(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def find_run(run_dir: Path | None = None, model_name: str | None = None) -> runner.RunDir:
    """--run-dir, else the --model's directory, else the run trained last."""
    return runner.find_run(APP, run_dir, model_name and default_run_dir(model_name),
                           fallback=default_run_dir(DEFAULT_MODEL))


def load_detector(run_dir: Path) -> anomaly.AnomalyDetector:
    # Not compiled: what reads a finished run only scores.
    return keras.saving.load_model(runner.RunDir(run_dir).file("best.keras"), compile=False)


def load_run(run_dir: Path | None = None) -> tuple[anomaly.AnomalyDetector, dict]:
    """A finished run's best detector and its run.json (with the threshold training chose)."""
    run = find_run(run_dir)
    detector = load_detector(run.path)
    run_json = run.config()
    if "threshold" not in run_json:
        raise UsageError(f"{run.path}: training did not finish; run `train` again")
    return detector, run_json


def held_out_metrics(detector: anomaly.AnomalyDetector, splits: tabular.Splits, run: dict,
                     run_dir: Path) -> dict:
    """Test-split figures at the run's threshold; evaluation.json and the PNGs."""
    test = splits.test
    if test.labels is None:
        raise DataError(f"{run['data']}: no label column, so there is nothing to evaluate"
                        " against")
    scores = anomaly.score(detector, test.features)
    metrics = {"model": run["model"], "data": run["data"], "split": splits.by,
               "threshold": run["threshold"], "threshold_rule": run["threshold_rule"],
               **anomaly.detection_figures(test.labels, scores, run["threshold"])}
    plot_detection(test.labels, scores, run["threshold"], run_dir, run["model"])
    runner.write_json(run_dir / "evaluation.json", metrics)
    return metrics


def plot_detection(labels: np.ndarray, scores: np.ndarray, threshold: float, run_dir: Path,
                   title: str) -> None:
    """pr_curve.png, roc_curve.png and score_histogram.png of the test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    if 0 < labels.sum() < len(labels):
        precision, recall, _ = precision_recall_curve(labels, scores)
        false_positive_rate, true_positive_rate, _ = roc_curve(labels, scores)
        for name, x, y, xlabel, ylabel, chance in (
            ("pr_curve", recall, precision, "recall", "precision", labels.mean()),
            ("roc_curve", false_positive_rate, true_positive_rate, "false positive rate",
             "true positive rate", None),
        ):
            figure, axis = plt.subplots(figsize=(5, 4.2))
            axis.plot(x, y, label=title)
            if chance is None:
                axis.plot([0, 1], [0, 1], "--", color="grey", label="chance")
            else:
                axis.axhline(chance, ls="--", color="grey", label=f"chance ({chance:.3f})")
            axis.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02),
                     title=("Precision-recall" if name == "pr_curve" else "ROC")
                     + " curve (test split)")
            axis.grid(alpha=0.3)
            axis.legend(loc="lower left" if chance is not None else "lower right")
            figure.tight_layout()
            figure.savefig(run_dir / f"{name}.png", dpi=100)
            plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    # Scores span orders of magnitude (frauds reconstruct badly): bins on a symmetric log scale.
    shifted = scores - min(scores.min(), threshold) + 1.0
    bins = np.geomspace(shifted.min(), shifted.max() + 1e-9, 50)
    for value, name, colour in ((0, "normal", "tab:blue"), (1, "anomaly", "tab:red")):
        if (labels == value).any():
            axis.hist(shifted[labels == value], bins=bins, alpha=0.6, color=colour,
                      label=f"{name} ({int((labels == value).sum())})", log=True)
    axis.axvline(threshold - min(scores.min(), threshold) + 1.0, color="black", ls="--",
                 label="threshold")
    axis.set(xscale="log", xlabel="anomaly score (shifted to start at 1)", ylabel="rows",
             title=f"Score histogram, test split ({title})")
    axis.legend()
    figure.tight_layout()
    figure.savefig(run_dir / "score_histogram.png", dpi=100)
    plt.close(figure)


def evaluate(run_dir: Path | None = None) -> dict:
    """`evaluate`: ROC-AUC, PR-AUC, figures at the threshold and a confusion table."""
    run_dir = find_run(run_dir).path
    detector, run = load_run(run_dir)
    metrics = held_out_metrics(detector, load_data(run), run, run_dir)
    c = metrics["confusion"]
    print(f"{run['model']} on {run['data']}, test split ({metrics['split']}):"
          f" {metrics['rows']} rows, {metrics['anomalies']} anomalies"
          f" (rate {metrics['anomaly_rate']:.4f})\n")
    runner.print_table([
        {"ROC-AUC": four_places(metrics["roc_auc"]),
         "PR-AUC (AP)": four_places(metrics["pr_auc"]),
         "precision": f"{metrics['precision']:.3f}", "recall": f"{metrics['recall']:.3f}",
         "F1": f"{metrics['f1']:.3f}", "threshold": f"{run['threshold']:.4g}"}
    ])
    print(f"\nthreshold: {run['threshold_rule']}\n")
    runner.print_table([
        {"": "true normal", "flagged normal": c["true_negative"],
         "flagged anomaly": c["false_positive"]},
        {"": "true anomaly", "flagged normal": c["false_negative"],
         "flagged anomaly": c["true_positive"]},
    ])
    print(f"\nPR and ROC curves, score histogram and JSON in {run_dir}")
    return metrics


# ---------------------------------------------------------------------------------------------
# predict: score a CSV file, streaming
# ---------------------------------------------------------------------------------------------


def predict(path: Path, output: Path, run_dir: Path | None = None, quiet: bool = False) -> dict:
    """Writes `path`'s rows back with `score` and `is_anomaly` columns, streaming: a bad row
    leaves no output behind (`tabular.write_scored_csv`)."""
    path, output = Path(path), Path(output)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    detector, run = load_run(run_dir)
    rows, flagged = tabular.write_scored_csv(
        path, output, tabular.Schema.from_json(run["schema"]), detector.predict_on_batch,
        run["threshold"], PREDICT_CHUNK_ROWS, progress=not quiet)
    return {"rows": rows, "flagged": flagged, "output": str(output), "model": run["model"],
            "threshold": run["threshold"]}


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------


# Which signature each .tflite variant runs. Full-int8 quantisation gives a tensor one scale:
# raw columns (seconds up to a week beside shares below 1) cannot share one, and even one
# scale per column loses card testing's minute-long gaps in a 40-minute step. The int8 model
# therefore takes standardised rows; schema.json carries the statistics to make them.
TFLITE_SIGNATURES = {"float32": "serving_default", "int8": STANDARDIZED_SIGNATURE}


def serving_archive(detector: anomaly.AnomalyDetector, schema: tabular.Schema, threshold: float,
                    calibration: np.ndarray | None = None) -> keras.export.ExportArchive:
    """`anomaly.serving_archive` with one input per column of `schema`, named by `input_name`."""
    return anomaly.serving_archive(detector, [input_name(f) for f in schema.features], threshold,
                                   calibration)


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's detector as the next version under `model_base/fraud/`, each .tflite
    variant checked in LiteRT against Keras on the test split."""
    run_dir = find_run(run_dir).path
    detector, run = load_run(run_dir)
    schema = tabular.Schema.from_json(run["schema"])
    splits = load_data(run)
    test, threshold = splits.test, run["threshold"]
    scaling = {"log_mask": detector.log_mask, "mean": detector.mean,
               "variance": detector.variance}
    keras_scores = anomaly.score(detector, test.features)
    labels = test.labels if test.labels is not None else np.zeros(len(test), "int64")
    # int8 calibration: training normals and validation rows, so that the calibrated score
    # range reaches past the threshold.
    calibration_rows = np.concatenate([splits.train.normals().features,
                                       splits.validation.features])
    pick = np.random.default_rng(SEED).permutation(len(calibration_rows))[:REPRESENTATIVE_ROWS]
    calibration = standardize(calibration_rows[pick], scaling)

    def figures(tflite: Path) -> dict:  # assets.extra/fraud_<variant>.tflite
        signature = TFLITE_SIGNATURES[tflite.stem.rsplit("_", 1)[1]]
        scores, flags = score_rows(tflite, signature, test.features, schema.features, scaling)
        return {"signature": signature, **anomaly.detection_figures(labels, scores, threshold),
                "flags_as_keras": float((flags == (keras_scores > threshold)).mean())}

    # The web page's form starts from a typical normal row: the held-out normal whose score is
    # the normals' median.
    normals = np.flatnonzero(labels == 0)
    typical = normals[np.argsort(keras_scores[normals])[len(normals) // 2]]

    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(detector, schema, threshold, calibration),
        assets={
            "playground.json": {
                "threshold": threshold,
                "example": {input_name(f): round(float(v), 6)
                            for f, v in zip(schema.features, test.features[typical])}},
            "schema.json": {
                **schema.to_json(), "inputs": [input_name(f) for f in schema.features],
                "threshold": threshold, "threshold_rule": run["threshold_rule"],
                "model": run["model"], "outputs": {"score": "higher = more anomalous",
                                                   "is_anomaly": "score > threshold"},
                "scaling": scaling},
            "litert.json": {
                "signatures": {f"{APP}_{v}.tflite": s for v, s in TFLITE_SIGNATURES.items()},
                "score_standardized input": "features: log1p of scaling.log_mask columns, then"
                                            " (x - mean) / sqrt(variance), see schema.json",
                "outputs": ["score", "is_anomaly"]}},
        tflite=export_lib.TFLiteFiles(
            APP, TFLITE_SIGNATURES, variants=TFLITE_VARIANTS,
            check=figures,
            representative_inputs=lambda: (row[None] for row in calibration)),
        report={"run": str(run_dir.resolve()), "model": run["model"], "threshold": threshold,
                "test_rows": len(test),
                "keras": anomaly.detection_figures(labels, keras_scores, threshold)},
        progress=not quiet)
    if not quiet:
        runner.print_table(
            [{"format": "Keras", "file": "best.keras", "size (KiB)": "",
              "ROC-AUC": four_places(report["keras"]["roc_auc"]),
              "F1": f"{report['keras']['f1']:.3f}", "same flags as Keras": ""}]
            + [{"format": f"TFLite {v}", "file": report[v]["file"],
                "size (KiB)": f"{report[v]['bytes'] / 1024:.1f}",
                "ROC-AUC": four_places(report[v]["roc_auc"]), "F1": f"{report[v]['f1']:.3f}",
                "same flags as Keras": f"{report[v]['flags_as_keras']:.2%}"}
               for v in TFLITE_VARIANTS]
        )
        print(f"\nSavedModel (serving_default: {len(schema.features)} named float inputs ->"
              f" score, is_anomaly) and .tflite files in {report['saved_model']}")
    return report


def served_figures(version_dir: Path, run_dir: Path | None = None) -> list[dict]:
    """The test rows as a user has them, a CSV file with the data's column names, through every
    served path beside what `evaluate` scores on the same rows: one row per path and figure
    (the skew check), each path's flags as it flags."""
    detector, run = load_run(run_dir)
    test, features = load_data(run).test, run["schema"]["features"]
    if test.labels is None:
        raise DataError(f"{run['data']}: no label column, so there is nothing to measure")
    names, extra = [input_name(f) for f in features], Path(version_dir) / export_lib.EXTRA_DIR
    evaluated = anomaly.score(detector, test.features)
    paths = {"evaluate (Keras)": (evaluated, evaluated > run["threshold"])}
    with tempfile.TemporaryDirectory() as folder:
        rows_csv, scored_csv = Path(folder, "rows.csv"), Path(folder, "scored.csv")
        tabular.write_table_csv(rows_csv, test)
        with open(rows_csv, newline="") as handle:  # a TF Serving request: rows as JSON
            request = json.dumps({"instances": [{name: float(row[f]) for name, f in
                                                 zip(names, features)}
                                                for row in csv.DictReader(handle)]})
        instances = json.loads(request)["instances"]
        columns = {name: np.array([row[name] for row in instances], "float32") for name in names}
        served = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
            **{name: tf.constant(column) for name, column in columns.items()})
        paths["SavedModel serving_default"] = (served["score"].numpy(),
                                               served["is_anomaly"].numpy())
        predict(rows_csv, scored_csv, run_dir, quiet=True)
        with open(scored_csv, newline="") as handle:
            scored = list(csv.DictReader(handle))
        paths["CLI predict"] = (np.array([float(row["score"]) for row in scored]),
                                np.array([row["is_anomaly"] == "1" for row in scored]))
    scaling = json.loads((extra / "schema.json").read_text())["scaling"]
    rows = np.stack([columns[name] for name in names], axis=1)  # a phone's float32 rows
    for variant in TFLITE_VARIANTS:
        paths[f"LiteRT {variant}"] = score_rows(extra / f"{APP}_{variant}.tflite",
                                                TFLITE_SIGNATURES[variant], rows, features,
                                                scaling)
    return [{"app": APP, "path": path, "figure": figure, "value": value, "examples": len(test)}
            for path, (scores, flags) in paths.items()
            for figure, value in anomaly.served_figures(test.labels, scores, flags, evaluated,
                                                        run["threshold"]).items()]


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the autoencoder on the synthetic transactions, then export."""
    metrics = train(TrainConfig(verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "fraud (dense autoencoder)",
        "quality": f"test PR-AUC {metrics['pr_auc']:.3f} (fraud rate"
                   f" {metrics['anomaly_rate']:.3f}), ROC-AUC {metrics['roc_auc']:.3f}",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report),
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.fraud",
        description="Fraud / anomaly detection with autoencoders, VAEs and RBMs trained on"
                    " normal rows: train, evaluate, score CSV files, export.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_options(sub, default_model=None):
        sub.add_argument("--model", choices=MODELS, default=default_model,
                         help="autoencoder (reconstruction error), vae (reconstruction"
                              " likelihood) or rbm (free energy)"
                              + (" (default: %(default)s)" if default_model else
                                 " (default: the last trained run)"))
        sub.add_argument("--run-dir", type=Path,
                         help="run directory (default: runs/fraud/<model>)")
        return sub

    train_parser = with_run_options(commands.add_parser("train", help="train a detector"),
                                    DEFAULT_MODEL)
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="synthetic (embedded card transactions, default), a CSV file (ULB creditcard.csv"
             " is recognised; others: every column but --label and --time is a feature), or a"
             " UCR .txt file (class 1 = normal)")
    train_parser.add_argument("--label", help="label column of a CSV (0 = normal; default:"
                                              " 'label' when present)")
    train_parser.add_argument("--time", dest="time_column",
                              help="time column of a CSV: split by it (default: 'time' when"
                                   " present, else a stratified split)")
    train_parser.add_argument("--rows", type=int, default=SYNTHETIC_ROWS,
                              help="synthetic rows to generate (default: %(default)s)")
    train_parser.add_argument("--compare", action="store_true",
                              help="train all three models on the same split, one table")
    runner.add_training_options(
        train_parser, EPOCHS, None,
        batch_help=f"default: {BATCH_SIZE}, {RBM_BATCH_SIZE} for the RBM; less on small data so"
                   f" that an epoch has {MIN_STEPS_PER_EPOCH} steps")

    with_run_options(commands.add_parser("evaluate", help="test-split figures and plots"))

    predict_parser = with_run_options(
        commands.add_parser("predict", help="score the rows of a CSV file"))
    predict_parser.add_argument("file", type=Path, metavar="FILE.csv")
    predict_parser.add_argument("--output", type=Path, required=True, metavar="OUT.csv",
                                help="the rows with `score` and `is_anomaly` columns added")

    export_parser = with_run_options(
        commands.add_parser("export", help="SavedModel version + .tflite files"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        config = runner.config_from_args(TrainConfig, args)
        compare(config, args.run_dir) if args.compare else train(config)
        return
    run = find_run(args.run_dir, args.model)
    run.announce()
    run_dir = run.path
    if args.command == "evaluate":
        evaluate(run_dir)
    elif args.command == "predict":
        result = predict(args.file, args.output, run_dir)
        print(f"{result['rows']} rows scored by {result['model']}, {result['flagged']} flagged"
              f" (score > {result['threshold']:.4g}) -> {result['output']}")
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
