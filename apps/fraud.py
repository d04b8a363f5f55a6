"""Fraud and anomaly detection: models that learn what normal looks like, and flag what is not.

    python -m apps.fraud train                          # dense autoencoder, synthetic card data
    python -m apps.fraud train --model vae --data creditcard.csv   # ULB's schema, read as is
    python -m apps.fraud train --compare                # all three models, one table
    python -m apps.fraud evaluate
    python -m apps.fraud predict transactions.csv --output scored.csv
    python -m apps.fraud export                         # -> saved_models/fraud/<version>/

Frauds are rare, varied and change as fraudsters adapt, so instead of learning "fraud" from a
few hundred examples, each model here learns the distribution of NORMAL rows (it trains on
normal rows only) and scores a row by how badly it fits that distribution:

- `autoencoder`: a dense autoencoder squeezes a row through a narrow code and rebuilds it; the
  score is the reconstruction error. Rows unlike the training rows rebuild poorly (the idea of
  Japkowicz et al. 1995 and Hawkins et al. 2002, "Outlier detection using replicator neural
  networks").
- `vae`: a variational autoencoder (Kingma & Welling 2014) with a Gaussian decoder that also
  predicts how uncertain each feature is; the score is the negative evidence lower bound at the
  posterior mean: the row's negative log-likelihood under the decoder (An & Cho's 2015
  "reconstruction probability" without the Monte Carlo average, so that the served score is
  deterministic) plus the KL term, which says how unusual the row's code is.
- `rbm`: a Gaussian-Bernoulli restricted Boltzmann machine (`layers/rbm.py`, trained by
  contrastive divergence); the score is its free energy, -log of the unnormalised probability
  of the row.

Every model reads raw rows: the scaling (log(1 + x) of heavy-tailed columns, then a
`Normalization` layer whose statistics come from the training normals only) lives inside the
model, so the exported SavedModel takes rows as a client has them. The threshold that turns a
score into a flag is chosen on the validation split (the F1-best threshold when it holds
anomalies, else the 99.5th percentile of its normal scores) and is baked into the export. The
same labelled validation rows pick the best epoch (`ValidationDetection`): an autoencoder's
detection peaks and then falls while its reconstruction loss still improves.
"""

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from apps import runner
from apps.runner import UsageError
from pipelines import DataError, tabular
from serving import export as exporting
from serving.litert import LiteRTModel

APP = "fraud"
MODELS = ("autoencoder", "vae", "rbm")
DEFAULT_MODEL = "autoencoder"
DEFAULT_DATA = "synthetic"
SYNTHETIC_ROWS = 30_000
EPOCHS = 20
BATCH_SIZE = 256  # per replica, at most: see auto_batch_size
MIN_STEPS_PER_EPOCH = 20  # small data sets get smaller batches rather than 2 steps an epoch
# Learning rates are per replica: N replicas train at N times these (runner.scaled_learning_rate).
LEARNING_RATE = 1e-3  # Adam, autoencoder and VAE
# Capacity: an autoencoder that can rebuild everything rebuilds frauds too. On the synthetic
# transactions (7 features) a 64-unit, 3-code network peaked after 3 epochs and then fell to
# half its PR-AUC; a 16-unit, 2-code one keeps improving for 6 and falls slowly.
MAX_HIDDEN_UNITS = 64  # hidden layers: twice the features, between 16 and 64
MAX_CODE_UNITS = 8  # the bottleneck: a quarter of the features, between 2 and 8
# Bounded units: a tanh network cannot follow a row far outside the range it trained on, so
# such a row rebuilds badly; a ReLU decoder extrapolates linearly along the directions it
# learned and rebuilds some frauds well (test PR-AUC 0.38 against 0.73 on the synthetic data,
# 10 epochs).
ACTIVATION = "tanh"
SCORE_WITH_KL = True  # the VAE's score: reconstruction NLL + KL (False: the NLL alone)
KL_WEIGHT = 1.0  # the VAE's beta; 1 is the evidence lower bound
# Floor of the VAE decoder's log-variance (a standard deviation of 0.37 in standardised units):
# without it, features the decoder predicts well get weights so large that any deviation in
# them dominates the score.
MIN_LOG_VARIANCE = -2.0
RBM_HIDDEN_UNITS = 64
RBM_CD_STEPS = 1
RBM_BATCH_SIZE = 64  # CD-1 updates are noisy estimates: more of them per epoch
RBM_LEARNING_RATE = 1e-2  # SGD; Gaussian visible units want smaller steps than binary ones
RBM_MOMENTUM = 0.9
RBM_WEIGHT_DECAY = 1e-4
SEED = 42
NORMAL_QUANTILE = 99.5  # threshold rule when the validation split has no anomalies
PREDICT_CHUNK_ROWS = 8_192
MODEL_BASE = Path("saved_models")
TFLITE_VARIANTS = ("float32", "int8")  # float16 and dynamic add nothing for a model this small
REPRESENTATIVE_ROWS = 500


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


def auto_batch_size(train_rows: int, model_name: str = DEFAULT_MODEL) -> int:
    """The model's batch size, or less so that an epoch has MIN_STEPS_PER_EPOCH steps (a
    sample of 600 normal rows trains in batches of 30)."""
    largest = RBM_BATCH_SIZE if model_name == "rbm" else BATCH_SIZE
    return int(min(largest, max(16, train_rows // MIN_STEPS_PER_EPOCH)))


def hidden_units(n_features: int) -> int:
    return max(16, min(MAX_HIDDEN_UNITS, 2 * n_features))


def code_units(n_features: int) -> int:
    return max(2, min(MAX_CODE_UNITS, n_features // 4))


# ---------------------------------------------------------------------------------------------
# Scaling inside the model
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=APP)
class LogColumns(layers.Layer):
    """log(1 + x) of the columns flagged in `mask`, the other columns unchanged.

    Amounts and distances span five orders of magnitude; after the log, a standardised value of 3
    means "unusual" for them as it does for the other features.
    """

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = [float(m) for m in mask]

    def call(self, rows):
        mask = ops.convert_to_tensor(self.mask, dtype=rows.dtype)
        # Arithmetic instead of a select: plain element-wise ops quantise cleanly to int8.
        return rows + mask * (ops.log1p(ops.relu(rows)) - rows)

    def get_config(self):
        return {**super().get_config(), "mask": self.mask}


def scaling_statistics(features: np.ndarray, log_mask: list[float]) -> tuple[list, list]:
    """Mean and variance of the log-transformed training normals (the Normalization layer's)."""
    logged = np.where(np.asarray(log_mask, bool), np.log1p(np.maximum(features, 0)), features)
    # A column that never varies among normals still gets a finite scale.
    return logged.mean(axis=0).tolist(), np.maximum(logged.var(axis=0), 1e-6).tolist()


# ---------------------------------------------------------------------------------------------
# The detectors
# ---------------------------------------------------------------------------------------------


class AnomalyDetector(keras.Model):
    """Raw rows [batch, features] -> anomaly score [batch]; higher means more anomalous.

    Subclasses define `score_standardized` (and, except the RBM, `train_step`)."""

    def __init__(self, n_features, log_mask, mean, variance, seed=SEED, **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.log_mask = [float(m) for m in log_mask]
        self.mean = [float(m) for m in mean]
        self.variance = [float(v) for v in variance]
        self.seed = int(seed)
        self.log_columns = LogColumns(self.log_mask, name="log_columns")
        self.normalize = layers.Normalization(mean=self.mean, variance=self.variance,
                                              name="normalize")
        # Built here, eagerly: its constants must not belong to the graph of a first call.
        self.normalize.build((None, self.n_features))
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def standardize(self, rows):
        return self.normalize(self.log_columns(ops.cast(rows, "float32")))

    def call(self, rows, training=False):
        return self.score_standardized(self.standardize(rows))

    @property
    def metrics(self):
        return [self.loss_tracker]

    def replicas(self):
        return tf.distribute.get_replica_context().num_replicas_in_sync

    def get_config(self):
        return {**super().get_config(), "n_features": self.n_features, "log_mask": self.log_mask,
                "mean": self.mean, "variance": self.variance, "seed": self.seed}


def replica_normal(model: keras.Model, shape):
    """N(0, 1) noise of `shape` for this replica's rows of the global batch: the numbers one
    device draws for the same rows.

    A fresh stateless stream per training step (an int seed inside tf.function repeats every
    step; a SeedGenerator gives every replica the same numbers). Every replica draws the noise
    of the whole global batch and keeps its own slice, so an example's noise depends on its
    place in the global batch, not on which device holds it (replicas of equal shares; a short
    last batch split unevenly draws other, equally valid, numbers)."""
    context = tf.distribute.get_replica_context()
    replicas, replica = context.num_replicas_in_sync, context.replica_id_in_sync_group
    rows = shape[0]
    seed = tf.stack([tf.constant(model.seed, tf.int64),
                     tf.cast(model.optimizer.iterations, tf.int64)])
    everyone = tf.random.stateless_normal(tf.concat([[rows * replicas], shape[1:]], 0), seed=seed)
    return everyone[replica * rows : (replica + 1) * rows]


@keras.saving.register_keras_serializable(package=APP)
class Autoencoder(AnomalyDetector):
    """Dense autoencoder: features -> hidden -> code -> hidden -> features, tanh units;
    score = mean squared error of the reconstruction in standardised units."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        self.encoder = keras.Sequential(
            [layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             layers.Dense(code_units(n_features), activation=ACTIVATION)],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             layers.Dense(n_features)],
            name="decoder",
        )

    def squared_errors(self, z):
        return ops.square(z - self.decoder(self.encoder(z)))  # [batch, features]

    def score_standardized(self, z):
        return ops.mean(self.squared_errors(z), axis=-1)

    def train_step(self, rows):
        z = self.standardize(rows)
        with tf.GradientTape() as tape:
            loss = ops.mean(self.squared_errors(z))
            # The optimizer sums gradients across replicas: each contributes 1 / replicas.
            replica_loss = loss / self.replicas()
        gradients = tape.gradient(replica_loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, rows):
        self.loss_tracker.update_state(ops.mean(self.squared_errors(self.standardize(rows))))
        return {"loss": self.loss_tracker.result()}


@keras.saving.register_keras_serializable(package=APP)
class VariationalAutoencoder(AnomalyDetector):
    """VAE with a Gaussian encoder q(c | z) and a Gaussian decoder p(z | c) whose variance is
    learned per feature and per row. Loss: the negative ELBO, -E_q[log p(z | c)] + KL(q || N(0, I)),
    the expectation estimated with one reparameterised sample. Score: the same with the sample
    replaced by the posterior mean, -log p(z | mean of q) + KL(q || N(0, I))."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        code = code_units(n_features)
        self.encoder = keras.Sequential(
            [layers.Dense(hidden_units(n_features), activation=ACTIVATION), layers.Dense(2 * code)],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             layers.Dense(2 * n_features)],
            name="decoder",
        )
        self.kl_tracker = keras.metrics.Mean(name="kl")

    @property
    def metrics(self):
        return [self.loss_tracker, self.kl_tracker]

    def encode(self, z):
        code_mean, code_log_variance = ops.split(self.encoder(z), 2, axis=-1)
        return code_mean, code_log_variance

    def negative_log_likelihood(self, z, code):
        mean, log_variance = ops.split(self.decoder(code), 2, axis=-1)
        log_variance = ops.maximum(log_variance, MIN_LOG_VARIANCE)
        # -log N(z; mean, exp(log_variance)) summed over features, without the constant.
        return 0.5 * ops.sum(ops.square(z - mean) * ops.exp(-log_variance) + log_variance, axis=-1)

    def kl_divergence(self, code_mean, code_log_variance):
        """KL(q(c | z) || N(0, I)) per row."""
        return -0.5 * ops.sum(1.0 + code_log_variance - ops.square(code_mean)
                              - ops.exp(code_log_variance), axis=-1)

    def score_standardized(self, z):
        code_mean, code_log_variance = self.encode(z)
        score = self.negative_log_likelihood(z, code_mean)
        if SCORE_WITH_KL:
            score = score + self.kl_divergence(code_mean, code_log_variance)
        return score

    def train_step(self, rows):
        z = self.standardize(rows)
        with tf.GradientTape() as tape:
            code_mean, code_log_variance = self.encode(z)
            epsilon = replica_normal(self, tf.shape(code_mean))
            code = code_mean + ops.exp(0.5 * code_log_variance) * epsilon  # reparameterised
            reconstruction = self.negative_log_likelihood(z, code)
            kl = self.kl_divergence(code_mean, code_log_variance)
            loss = ops.mean(reconstruction + KL_WEIGHT * kl)
            replica_loss = loss / self.replicas()
        gradients = tape.gradient(replica_loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        self.loss_tracker.update_state(loss)
        self.kl_tracker.update_state(ops.mean(kl))
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, rows):
        # Validation loss: the deterministic score (no sampling), which is what gets served.
        self.loss_tracker.update_state(ops.mean(self(rows)))
        return {"loss": self.loss_tracker.result()}


@keras.saving.register_keras_serializable(package=APP)
class RBMDetector(AnomalyDetector):
    """A Gaussian-Bernoulli RBM on the standardised rows; score = free energy F(z). Trained
    outside `fit` of this model by `layers.rbm.RBMTrainer` (CD-k), which updates the same
    `rbm` layer."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        from layers.rbm import RBM

        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        self.rbm = RBM(RBM_HIDDEN_UNITS, visible="gaussian", name="rbm")
        self.rbm.build((None, self.n_features))  # the score reads its weights, not its call

    def score_standardized(self, z):
        return self.rbm.free_energy(z)


DETECTORS = {"autoencoder": Autoencoder, "vae": VariationalAutoencoder, "rbm": RBMDetector}


def build_model(model_name: str, n_features: int, log_mask, mean, variance,
                seed: int = SEED) -> AnomalyDetector:
    if model_name not in DETECTORS:
        raise UsageError(f"--model {model_name}: choose from {', '.join(MODELS)}")
    detector = DETECTORS[model_name](n_features, log_mask, mean, variance, seed=seed,
                                     name=model_name)
    detector(np.zeros((1, n_features), "float32"))  # creates the weights
    return detector


def build_for(model_name: str, schema: tabular.Schema, train_normals: np.ndarray,
              seed: int = SEED) -> AnomalyDetector:
    """A detector whose scaling statistics come from `train_normals`."""
    log_mask = [float(name in schema.log_features) for name in schema.features]
    mean, variance = scaling_statistics(train_normals, log_mask)
    return build_model(model_name, len(schema.features), log_mask, mean, variance, seed)


# ---------------------------------------------------------------------------------------------
# Threshold and figures
# ---------------------------------------------------------------------------------------------


def score(detector: AnomalyDetector, features: np.ndarray) -> np.ndarray:
    return detector.predict(np.asarray(features, "float32"), batch_size=4_096, verbose=0)


def choose_threshold(scores: np.ndarray, labels: np.ndarray | None) -> tuple[float, str]:
    """The validation threshold and the rule that chose it."""
    from sklearn.metrics import precision_recall_curve

    if labels is None or labels.sum() == 0 or labels.sum() == len(labels):
        threshold = float(np.percentile(scores, NORMAL_QUANTILE))
        return threshold, f"{NORMAL_QUANTILE}th percentile of the validation normals' scores"
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    # Flags are `score > threshold`: halfway to the next lower score keeps the chosen rows.
    below = scores[scores < thresholds[best]]
    threshold = (thresholds[best] + below.max()) / 2 if len(below) else thresholds[best] - 1e-6
    return float(threshold), "best F1 on the validation split"


def detection_figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, PR-AUC (average precision) and the figures at the threshold."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    flags = scores > threshold
    true_positive = int((flags & (labels == 1)).sum())
    false_positive = int((flags & (labels == 0)).sum())
    false_negative = int((~flags & (labels == 1)).sum())
    true_negative = int((~flags & (labels == 0)).sum())
    precision = true_positive / max(true_positive + false_positive, 1)
    recall = true_positive / max(true_positive + false_negative, 1)
    both_classes = 0 < labels.sum() < len(labels)
    return {
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "pr_auc": float(average_precision_score(labels, scores)) if both_classes else None,
        "anomaly_rate": float(labels.mean()),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "accuracy": (true_positive + true_negative) / max(len(labels), 1),
        "confusion": {"true_negative": true_negative, "false_positive": false_positive,
                      "false_negative": false_negative, "true_positive": true_positive},
        "rows": int(len(labels)),
        "anomalies": int(labels.sum()),
    }


def plot_detection(labels: np.ndarray, scores: np.ndarray, threshold: float, run_dir: Path,
                   title: str) -> list[Path]:
    """pr_curve.png, roc_curve.png and score_histogram.png of the test split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    paths = []
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
            paths.append(run_dir / f"{name}.png")
            figure.savefig(paths[-1], dpi=100)
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
    paths.append(run_dir / "score_histogram.png")
    figure.savefig(paths[-1], dpi=100)
    plt.close(figure)
    return paths


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def load_data(run: dict) -> tabular.Splits:
    """The run's data source, split the way training split it."""
    table = tabular.load_table(run["data"], label=run.get("label_option"),
                               time=run.get("time_option"), rows=run.get("rows", SYNTHETIC_ROWS),
                               seed=run.get("data_seed", 0))
    splits = tabular.split(table)
    tabular.check_trainable(splits, run["data"])
    return splits


class ValidationDetection(keras.callbacks.Callback):
    """Adds `val_pr_auc`, the average precision of the detector's scores on the labelled
    validation split, to each epoch's logs (before the checkpoint and CSV callbacks read them).

    Why not the validation loss: an autoencoder keeps lowering its reconstruction error by
    learning to rebuild more of everything, frauds included; its detection peaks and then
    declines while the loss still falls. With labelled validation rows, the epoch that
    detects best is the one to keep. With `save_to`, it also keeps the best detector itself
    (for the RBM, whose fitted model is its trainer)."""

    def __init__(self, detector: "AnomalyDetector", validation: tabular.Table,
                 save_to: Path | None = None, best: float | None = None):
        super().__init__()
        self.detector, self.validation, self.save_to = detector, validation, save_to
        self.best = -1.0 if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        from sklearn.metrics import average_precision_score

        scores = score(self.detector, self.validation.features)
        if not np.isfinite(scores).all():  # a diverged epoch detects nothing
            scores = np.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
        logs["val_pr_auc"] = float(average_precision_score(self.validation.labels, scores))
        if self.save_to is not None and logs["val_pr_auc"] > self.best:
            self.best = logs["val_pr_auc"]
            self.detector.save(self.save_to)


def has_both_classes(table: tabular.Table) -> bool:
    return table.labels is not None and 0 < table.labels.sum() < len(table)


def fit_detector(detector: AnomalyDetector, model_name: str, splits: tabular.Splits,
                 run_dir: Path, epochs: int, global_batch: int, seed: int, resumed: bool,
                 verbose, jit: bool = False, backup_every: int | None = None) -> int:
    """Trains on the training normals; returns the number of steps. The best epoch: the
    highest validation PR-AUC when the validation split holds anomalies, else the lowest
    validation loss (of the normals). Call it in the strategy's scope."""
    train_rows = splits.train.normals().features
    validation_rows = splits.validation.normals().features
    if model_name == "rbm":
        # The RBM trainer sees standardised rows; the detector standardises inside.
        train_rows, validation_rows = (detector.standardize(rows).numpy()
                                       for rows in (train_rows, validation_rows))

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return tabular.batches(train_rows, global_batch, shuffle=True, seed=seed + epoch)

    steps_per_epoch = -(-len(train_rows) // global_batch)
    validation = tabular.batches(validation_rows, global_batch)
    labelled = has_both_classes(splits.validation)
    fit_options = {"steps_per_epoch": steps_per_epoch, "validation_data": validation,
                   "backup_every": backup_every, "jit": jit, "verbose": verbose}
    if model_name == "rbm":
        return fit_rbm(detector, epoch_batches, splits.validation if labelled else None,
                       run_dir, epochs, resumed, fit_options)
    monitor = ([ValidationDetection(detector, splits.validation)], "val_pr_auc", "max") \
        if labelled else ([], "val_loss", "min")
    strategy = tf.distribute.get_strategy()
    detector.compile(optimizer=keras.optimizers.Adam(
        runner.scaled_learning_rate(LEARNING_RATE, strategy)))
    return runner.fit(detector, epoch_batches, epochs, run_dir, **fit_options,
                      callbacks=monitor[0] + runner.training_callbacks(
                          run_dir, monitor=monitor[1], resumed=resumed, mode=monitor[2]))


def build_rbm_trainer(detector: RBMDetector, learning_rate: float | None = None):
    """CD-k for the detector's RBM, with its optimizer (by default at RBM_LEARNING_RATE scaled
    to the strategy's replicas); call it in the strategy's scope."""
    from layers.rbm import RBMTrainer

    trainer = RBMTrainer(detector.rbm, k=RBM_CD_STEPS, seed=detector.seed)
    trainer.build((None, detector.n_features))  # the backup restores into built variables
    if learning_rate is None:
        learning_rate = runner.scaled_learning_rate(RBM_LEARNING_RATE,
                                                    tf.distribute.get_strategy())
    trainer.compile(optimizer=keras.optimizers.SGD(
        learning_rate, momentum=RBM_MOMENTUM, weight_decay=RBM_WEIGHT_DECAY))
    return trainer


def fit_rbm(detector: RBMDetector, epoch_batches, labelled: tabular.Table | None,
            run_dir: Path, epochs: int, resumed: bool, fit_options: dict) -> int:
    """CD-k on standardised rows. Without labelled validation rows the last epoch is kept:
    free energies of different epochs differ by the unknown log partition function, so their
    values cannot pick an epoch (their ranking of rows can)."""
    trainer = build_rbm_trainer(detector)
    checkpoint = run_dir / "best.keras"
    selection = []
    if labelled is not None:
        history = runner.read_history(run_dir) if resumed and (
            run_dir / "history.csv").is_file() else {}
        best = max(history["val_pr_auc"]) if history.get("val_pr_auc") else None
        selection = [ValidationDetection(detector, labelled, save_to=checkpoint, best=best)]
    steps = runner.fit(trainer, epoch_batches, epochs, run_dir, **fit_options, callbacks=[
        *selection,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
    ])
    if labelled is None:
        detector.save(checkpoint)
    return steps


def train(
    data: str = DEFAULT_DATA,
    model_name: str = DEFAULT_MODEL,
    epochs: int = EPOCHS,
    batch_size: int | None = None,
    strategy_name: str = "auto",
    run_dir: Path | None = None,
    label: str | None = None,
    time_column: str | None = None,
    rows: int = SYNTHETIC_ROWS,
    seed: int = SEED,
    verbose: int | str = "auto",
    jit: bool = False,
    backup_every: int | None = None,
) -> dict:
    """Trains `model_name` on the normal rows of `data`'s training split, chooses the threshold
    on validation, reports on test. Returns the test figures."""
    keras.utils.set_random_seed(seed)
    run = {"app": APP, "model": model_name, "data": data, "label_option": label,
           "time_option": time_column, "rows": rows, "data_seed": 0}
    splits = load_data(run)
    schema = splits.train.schema
    strategy = runner.choose_strategy(strategy_name)
    run_dir = runner.worker_run_dir(Path(run_dir or default_run_dir(model_name)), strategy)
    batch_size = batch_size or auto_batch_size(len(splits.train.normals()), model_name)
    global_batch = batch_size * strategy.num_replicas_in_sync

    resumed = runner.start_run(run_dir)
    run.update({"source": splits.train.name, "schema": schema.to_json(), "split": splits.by,
                "epochs": epochs, "batch_size": batch_size, "seed": seed,
                "replicas": strategy.num_replicas_in_sync, "global_batch_size": global_batch,
                "train_normal_rows": len(splits.train.normals()),
                "validation_rows": len(splits.validation), "test_rows": len(splits.test)})
    runner.write_json(run_dir / "run.json", run)
    started = time.perf_counter()
    with strategy.scope():
        detector = build_for(model_name, schema, splits.train.normals().features, seed)
        steps = fit_detector(detector, model_name, splits, run_dir, epochs, global_batch, seed,
                             resumed is not None, verbose, jit, backup_every)
    run["train_seconds"] = time.perf_counter() - started
    runner.plot_history(run_dir)

    best = load_detector(run_dir)
    validation_labels = splits.validation.labels
    run["threshold"], run["threshold_rule"] = choose_threshold(
        score(best, splits.validation.features), validation_labels)
    runner.write_json(run_dir / "run.json", run)
    mark_last(run_dir)
    if splits.test.labels is None:  # nothing to measure against: how much gets flagged
        flagged = float((score(best, splits.test.features) > run["threshold"]).mean())
        metrics = {"model": model_name, "data": data, "rows": len(splits.test),
                   "flag_rate": flagged, "steps": steps}
        runner.write_json(run_dir / "metrics.json", metrics)
        print(f"{APP} {model_name} on {splits.train.name} (no labels): {flagged:.2%} of the"
              f" test rows flagged at threshold {run['threshold']:.4g}; run directory {run_dir}")
        return metrics
    metrics = held_out_metrics(best, splits, run, run_dir) | {"steps": steps}
    runner.write_json(run_dir / "metrics.json", metrics)
    print(f"{APP} {model_name} on {splits.train.name}: test ROC-AUC {fmt(metrics['roc_auc'])},"
          f" PR-AUC {fmt(metrics['pr_auc'])} (anomaly rate {metrics['anomaly_rate']:.4f}),"
          f" F1 {metrics['f1']:.3f} at threshold {run['threshold']:.4g}; run directory {run_dir}")
    return metrics


def fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def mark_last(run_dir: Path) -> None:
    """`predict`, `evaluate` and `export` use the last trained run unless told otherwise."""
    (run_dir.parent / "last").write_text(str(run_dir.resolve()) + "\n")


def compare(data: str = DEFAULT_DATA, epochs: int = EPOCHS, batch_size: int | None = None,
            strategy_name: str = "auto", runs_root: Path | None = None, **options) -> list[dict]:
    """`train --compare`: every model on the same split; one table."""
    runs_root = Path(runs_root or runner.RUNS_ROOT / APP)
    rows = []
    for model_name in MODELS:
        print(f"\n=== {model_name} ===")
        metrics = train(data, model_name, epochs, batch_size, strategy_name,
                        runs_root / model_name, **options)
        run = json.loads((runs_root / model_name / "run.json").read_text())
        rows.append({"model": model_name, "ROC-AUC": fmt(metrics["roc_auc"]),
                     "PR-AUC": fmt(metrics["pr_auc"]), "precision": f"{metrics['precision']:.3f}",
                     "recall": f"{metrics['recall']:.3f}", "F1": f"{metrics['f1']:.3f}",
                     "train s": f"{run['train_seconds']:.0f}"})
    print(f"\nTest split of {data} ({metrics['rows']} rows, {metrics['anomalies']} anomalies,"
          " thresholds chosen on validation)")
    runner.print_table(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def resolve_run_dir(run_dir: Path | None, model_name: str | None) -> Path:
    """--run-dir, else the --model's default directory, else the last trained run."""
    if run_dir is not None:
        return Path(run_dir)
    if model_name is not None:
        return default_run_dir(model_name)
    last = runner.RUNS_ROOT / APP / "last"
    return Path(last.read_text().strip()) if last.is_file() else default_run_dir(DEFAULT_MODEL)


def load_detector(run_dir: Path) -> AnomalyDetector:
    checkpoint = Path(run_dir) / "best.keras"
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir}: no trained model (best.keras); run `train` first")
    if "RBMDetector" in _config_class(checkpoint):
        import layers.rbm  # noqa: F401  (registers the RBM layer for deserialisation)
    return keras.saving.load_model(checkpoint)


def _config_class(checkpoint: Path) -> str:
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        return json.loads(archive.read("config.json"))["class_name"]


def load_run(run_dir: Path) -> tuple[AnomalyDetector, dict]:
    detector = load_detector(run_dir)
    run = json.loads((Path(run_dir) / "run.json").read_text())
    if "threshold" not in run:
        raise UsageError(f"{run_dir}: training did not finish; run `train` again")
    return detector, run


def held_out_metrics(detector: AnomalyDetector, splits: tabular.Splits, run: dict,
                     run_dir: Path) -> dict:
    """Test-split figures at the run's threshold; evaluation.json and the PNGs."""
    test = splits.test
    if test.labels is None:
        raise DataError(f"{run['data']}: no label column, so there is nothing to evaluate"
                        " against")
    scores = score(detector, test.features)
    metrics = {"model": run["model"], "data": run["data"], "split": splits.by,
               "threshold": run["threshold"], "threshold_rule": run["threshold_rule"],
               **detection_figures(test.labels, scores, run["threshold"])}
    plot_detection(test.labels, scores, run["threshold"], run_dir, run["model"])
    runner.write_json(run_dir / "evaluation.json", metrics)
    return metrics


def evaluate(run_dir: Path | None = None, model_name: str | None = None) -> dict:
    """`evaluate`: ROC-AUC, PR-AUC, figures at the threshold and a confusion table."""
    run_dir = resolve_run_dir(run_dir, model_name)
    detector, run = load_run(run_dir)
    metrics = held_out_metrics(detector, load_data(run), run, run_dir)
    c = metrics["confusion"]
    print(f"{run['model']} on {run['data']}, test split ({metrics['split']}):"
          f" {metrics['rows']} rows, {metrics['anomalies']} anomalies"
          f" (rate {metrics['anomaly_rate']:.4f})\n")
    runner.print_table([
        {"ROC-AUC": fmt(metrics["roc_auc"]), "PR-AUC (AP)": fmt(metrics["pr_auc"]),
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


def predict(path: Path, output: Path, run_dir: Path | None = None,
            model_name: str | None = None, quiet: bool = False) -> dict:
    """Writes `path`'s rows back with `score` and `is_anomaly` columns, chunk by chunk, to a
    temporary file renamed to `output` at the end: a bad row leaves no output behind."""
    import csv

    from tqdm import tqdm

    path, output = Path(path), Path(output)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    run_dir = resolve_run_dir(run_dir, model_name)
    detector, run = load_run(run_dir)
    schema = tabular.Schema.from_json(run["schema"])
    threshold = run["threshold"]
    header = tabular.read_header(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial",
                                         dir=output.parent)
    rows = flagged = 0
    try:
        with os.fdopen(handle, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([*header, "score", "is_anomaly"])
            # A bar on a terminal only (disable=None), so an error stays the last line.
            with tqdm(unit=" rows", desc=f"scoring {path.name}",
                      disable=True if quiet else None) as progress:
                for chunk in tabular.read_csv_chunks(path, schema, PREDICT_CHUNK_ROWS):
                    scores = detector.predict_on_batch(chunk.features)
                    flags = scores > threshold
                    writer.writerows([*row, f"{s:.6g}", int(f)]
                                     for row, s, f in zip(chunk.rows, scores, flags))
                    rows += len(scores)
                    flagged += int(flags.sum())
                    progress.update(len(scores))
        if rows == 0:
            raise DataError(f"{path}, line 2: no data rows after the header")
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return {"rows": rows, "flagged": flagged, "output": str(output), "model": run["model"],
            "threshold": threshold}


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------


def input_name(feature: str) -> str:
    """A feature column's name as a signature input name (letters, digits, '_', '.', '-')."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", feature)
    return name if name[:1].isalnum() else f"f_{name}"


STANDARDIZED_SIGNATURE = "score_standardized"
# Which signature each .tflite variant runs. Full-int8 quantisation gives a tensor one scale:
# raw columns (seconds up to a week beside shares below 1) cannot share one, and even one
# scale per column loses card testing's minute-long gaps in a 40-minute step. The int8 model
# therefore takes standardised rows; schema.json carries the statistics to make them.
TFLITE_SIGNATURES = {"float32": "serving_default", "int8": STANDARDIZED_SIGNATURE}


def serving_archive(detector: AnomalyDetector, schema: tabular.Schema,
                    threshold: float) -> keras.export.ExportArchive:
    """Two endpoints, both returning `score` and `is_anomaly` (score > the baked threshold):

    - `serving_default`: one float32 [batch] input per raw feature column, named after it.
      Named columns are what a TF Serving client has: `{"instances": [{"amount_ratio": 4.2,
      "hour": 3.5, ...}]}` is a CSV row as JSON, without knowing the model's column order.
    - `score_standardized`: `features` float32 [batch, features], already log-transformed and
      standardised (what the int8 .tflite takes).
    """
    names = [input_name(f) for f in schema.features]
    archive = keras.export.ExportArchive()
    archive.track(detector)

    def serve(columns):
        rows = tf.stack([columns[name] for name in names], axis=1)  # [batch, features]
        scores = detector(rows, training=False)
        return {"score": scores, "is_anomaly": scores > threshold}

    def serve_standardized(features):
        scores = detector.score_standardized(features)
        return {"score": scores, "is_anomaly": scores > threshold}

    archive.add_endpoint(
        "serving_default", serve,
        input_signature=[{name: tf.TensorSpec([None], tf.float32, name=name) for name in names}],
    )
    archive.add_endpoint(
        STANDARDIZED_SIGNATURE, serve_standardized,
        input_signature=[tf.TensorSpec([None, len(names)], tf.float32, name="features")],
    )
    return archive


def columns_of(features: np.ndarray, schema: tabular.Schema) -> dict[str, np.ndarray]:
    return {input_name(f): np.ascontiguousarray(features[:, i], dtype="float32")
            for i, f in enumerate(schema.features)}


def standardize(features: np.ndarray, scaling: dict) -> np.ndarray:
    """What the detector does to raw rows before scoring, in numpy (a phone has no TF):
    `scaling` is schema.json's {"log_mask", "mean", "variance"}."""
    mask = np.asarray(scaling["log_mask"], bool)
    logged = np.where(mask, np.log1p(np.maximum(features, 0)), features)
    return ((logged - scaling["mean"]) / np.sqrt(scaling["variance"])).astype("float32")


def tflite_outputs(content: bytes, signature: str, features: np.ndarray,
                   schema: tabular.Schema, scaling: dict):
    """(scores, flags) of a .tflite model run in the LiteRT interpreter, 1,024 rows a call."""
    litert = LiteRTModel(content).signature(signature)
    scores, flags = [], []
    for start in range(0, len(features), 1_024):
        rows = features[start : start + 1_024]
        out = litert(**columns_of(rows, schema)) if signature == "serving_default" else \
            litert(features=standardize(rows, scaling))
        scores.append(out["score"])
        flags.append(out["is_anomaly"])
    return np.concatenate(scores), np.concatenate(flags).astype(bool)


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE,
           model_name: str | None = None, quiet: bool = False) -> dict:
    """Publishes a run's detector as the next version under `model_base/fraud/`."""
    from tqdm import tqdm

    run_dir = resolve_run_dir(run_dir, model_name)
    detector, run = load_run(run_dir)
    schema = tabular.Schema.from_json(run["schema"])
    splits = load_data(run)
    test = splits.test
    threshold = run["threshold"]
    scaling = {"log_mask": detector.log_mask, "mean": detector.mean,
               "variance": detector.variance}
    keras_scores = score(detector, test.features)
    keras_flags = keras_scores > threshold
    labels = test.labels if test.labels is not None else np.zeros(len(test), "int64")
    report = {"model": run["model"], "threshold": threshold, "test_rows": len(test),
              "keras": detection_figures(labels, keras_scores, threshold)}
    # int8 calibration: training normals and validation rows, so that the calibrated score
    # range reaches past the threshold.
    calibration_rows = np.concatenate([splits.train.normals().features,
                                       splits.validation.features])
    pick = np.random.default_rng(SEED).permutation(len(calibration_rows))[:REPRESENTATIVE_ROWS]
    calibration_rows = calibration_rows[pick]

    def write(version_dir: Path) -> None:
        serving_archive(detector, schema, threshold).write_out(str(version_dir), verbose=False)
        extra = version_dir / exporting.EXTRA_DIR
        extra.mkdir()
        runner.write_json(extra / "schema.json", {
            **schema.to_json(), "inputs": [input_name(f) for f in schema.features],
            "threshold": threshold, "threshold_rule": run["threshold_rule"],
            "model": run["model"], "outputs": {"score": "higher = more anomalous",
                                               "is_anomaly": "score > threshold"},
            "scaling": scaling})
        runner.write_json(extra / "litert.json", {
            "signatures": {f"{APP}_{v}.tflite": s for v, s in TFLITE_SIGNATURES.items()},
            "score_standardized input": "features: log1p of scaling.log_mask columns, then"
                                        " (x - mean) / sqrt(variance), see schema.json",
            "outputs": ["score", "is_anomaly"]})
        for variant in tqdm(TFLITE_VARIANTS, desc="TFLite", disable=quiet):
            signature = TFLITE_SIGNATURES[variant]
            content = exporting.convert_to_tflite(
                version_dir, signature, variant,
                (standardize(calibration_rows[i : i + 1], scaling)
                 for i in range(len(calibration_rows))),
            )
            path = extra / f"{APP}_{variant}.tflite"
            path.write_bytes(content)
            scores, flags = tflite_outputs(content, signature, test.features, schema, scaling)
            report[variant] = {
                "file": path.name, "bytes": len(content), "signature": signature,
                **detection_figures(labels, scores, threshold),
                "flags_as_keras": float((flags == keras_flags).mean()),
            }
        runner.write_json(extra / "tflite_report.json", report)

    version_dir = exporting.publish(Path(model_base) / APP, write)
    report["saved_model"] = str(version_dir)
    if not quiet:
        runner.print_table(
            [{"format": "Keras", "file": "best.keras", "size (KiB)": "",
              "ROC-AUC": fmt(report["keras"]["roc_auc"]), "F1": f"{report['keras']['f1']:.3f}",
              "same flags as Keras": ""}]
            + [{"format": f"TFLite {v}", "file": report[v]["file"],
                "size (KiB)": f"{report[v]['bytes'] / 1024:.1f}",
                "ROC-AUC": fmt(report[v]["roc_auc"]), "F1": f"{report[v]['f1']:.3f}",
                "same flags as Keras": f"{report[v]['flags_as_keras']:.2%}"}
               for v in TFLITE_VARIANTS]
        )
        print(f"\nSavedModel (serving_default: {len(schema.features)} named float inputs ->"
              f" score, is_anomaly) and .tflite files in {version_dir}")
    return report


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the autoencoder on the synthetic transactions, then export."""
    metrics = train(verbose=2)
    report = export(model_base=model_base, model_name=DEFAULT_MODEL, quiet=True)
    return {
        "app": "fraud (dense autoencoder)",
        "quality": f"test PR-AUC {metrics['pr_auc']:.3f} (fraud rate"
                   f" {metrics['anomaly_rate']:.3f}), ROC-AUC {metrics['roc_auc']:.3f}",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": (f"{report['float32']['bytes'] / 1024:.0f}/-/-/"
                                         f"{report['int8']['bytes'] / 1024:.0f}"),
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
    train_parser.add_argument("--seed", type=int, default=SEED)
    train_parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                              help="Keras fit output: 0 silent, 1 progress bar, 2 a line per epoch")
    runner.add_training_options(train_parser, EPOCHS, None)
    for action in train_parser._actions:
        if action.dest == "batch_size":
            action.help = (f"per replica (default: {BATCH_SIZE}, {RBM_BATCH_SIZE} for the RBM;"
                           f" less on small data so that an epoch has {MIN_STEPS_PER_EPOCH}"
                           " steps)")

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
        options = {"label": args.label, "time_column": args.time_column, "rows": args.rows,
                   "seed": args.seed, "verbose": args.verbose, "jit": args.jit,
                   "backup_every": args.backup_every}
        if args.compare:
            compare(args.data, args.epochs, args.batch_size, args.strategy,
                    args.run_dir, **options)
        else:
            train(args.data, args.model, args.epochs, args.batch_size, args.strategy,
                  args.run_dir, **options)
    elif args.command == "evaluate":
        evaluate(args.run_dir, args.model)
    elif args.command == "predict":
        result = predict(args.file, args.output, args.run_dir, args.model)
        print(f"{result['rows']} rows scored by {result['model']}, {result['flagged']} flagged"
              f" (score > {result['threshold']:.4g}) -> {result['output']}")
    elif args.command == "export":
        export(args.run_dir, args.model_base, args.model)


if __name__ == "__main__":
    runner.run_cli(main)
