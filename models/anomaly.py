"""Anomaly detectors that learn what normal rows look like and score how badly a row fits.

Frauds are rare, varied and change as fraudsters adapt, so instead of learning "fraud" from a few
hundred examples, each model here learns the distribution of NORMAL rows (it trains on normal
rows only) and scores a row by how badly it fits that distribution:

- `Autoencoder`: a dense autoencoder squeezes a row through a narrow code and rebuilds it; the
  score is the reconstruction error. Rows unlike the training rows rebuild poorly (the idea of
  Japkowicz et al. 1995 and Hawkins et al. 2002, "Outlier detection using replicator neural
  networks").
- `VariationalAutoencoder`: a variational autoencoder (Kingma & Welling 2014) with a Gaussian
  decoder that also predicts how uncertain each feature is; the score is the negative evidence
  lower bound at the posterior mean: the row's negative log-likelihood under the decoder (An &
  Cho's 2015 "reconstruction probability" without the Monte Carlo average, so that the served
  score is deterministic) plus the KL term, which says how unusual the row's code is.
- `RBMDetector`: a Gaussian-Bernoulli restricted Boltzmann machine (`layers/rbm.py`, trained by
  contrastive divergence); the score is its free energy, -log of the unnormalised probability
  of the row.

Every model reads raw rows [batch, features] and returns scores [batch], higher = more
anomalous. The scaling lives inside the model (log(1 + x) of heavy-tailed columns, then a
`Normalization` layer whose statistics come from the training normals only), so an exported
model takes rows as a client has them. A threshold turns a score into a flag (`choose_threshold`:
the F1-best one on labelled validation rows, else a high percentile of normal rows' scores);
`detection_figures` says how well the flags and the ranking of scores find the anomalies.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.rbm import RBM, RBMTrainer  # also registers them for loading checkpoints
from pipelines.tabular import Table

# Capacity: an autoencoder that can rebuild everything rebuilds frauds too; a wider network
# with a larger code peaks after a few epochs and then loses detection (bench/README.md).
MAX_HIDDEN_UNITS = 64  # hidden layers: twice the features, between 16 and 64
MAX_CODE_UNITS = 8  # the bottleneck: a quarter of the features, between 2 and 8
# Bounded units: a tanh network cannot follow a row far outside the range it trained on, so such
# a row rebuilds badly; a ReLU decoder extrapolates linearly along the directions it learned and
# rebuilds some frauds well (bench/README.md).
ACTIVATION = "tanh"
SCORE_WITH_KL = True  # the VAE's score: reconstruction NLL + KL (False: the NLL alone)
KL_WEIGHT = 1.0  # the VAE's beta; 1 is the evidence lower bound
# Floor of the VAE decoder's log-variance (a standard deviation of 0.37 in standardised units):
# without it, features the decoder predicts well get weights so large that any deviation in
# them dominates the score.
MIN_LOG_VARIANCE = -2.0
RBM_HIDDEN_UNITS = 64
RBM_CD_STEPS = 1
RBM_MOMENTUM = 0.9
RBM_WEIGHT_DECAY = 1e-4
NORMAL_QUANTILE = 99.5  # threshold rule when the validation split has no anomalies


def hidden_units(n_features: int) -> int:
    return max(16, min(MAX_HIDDEN_UNITS, 2 * n_features))


def code_units(n_features: int) -> int:
    return max(2, min(MAX_CODE_UNITS, n_features // 4))


# ---------------------------------------------------------------------------------------------
# Scaling inside the model
# ---------------------------------------------------------------------------------------------


# Registered under the package it had in apps/fraud.py: saved checkpoints name it.
@keras.saving.register_keras_serializable(package="fraud")
class LogColumns(keras.layers.Layer):
    """log(1 + x) of the columns flagged in `mask`, the other columns unchanged.

    Amounts and distances span five orders of magnitude; after the log, a standardised value of 3
    means "unusual" for them as it does for the other features.
    """

    def __init__(self, mask, **kwargs):
        super().__init__(**kwargs)
        self.mask = [float(m) for m in mask]

    def call(self, rows):
        mask = ops.convert_to_tensor(self.mask, dtype=rows.dtype)
        # Exactly log1p (mask 1) or the row (mask 0), as numpy's `litert_fraud.standardize`:
        # x + (log1p(x) - x) would round log1p to x's float32 spacing (0.06 near a week).
        return rows * (1.0 - mask) + mask * ops.log1p(ops.relu(rows))

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

    Subclasses define `score_standardized` (and, except the RBM, `train_step`). `seed` seeds the
    VAE's noise."""

    def __init__(self, n_features, log_mask, mean, variance, seed=42, **kwargs):
        super().__init__(**kwargs)
        self.n_features = int(n_features)
        self.log_mask = [float(m) for m in log_mask]
        self.mean = [float(m) for m in mean]
        self.variance = [float(v) for v in variance]
        self.seed = int(seed)
        self.log_columns = LogColumns(self.log_mask, name="log_columns")
        self.normalize = keras.layers.Normalization(mean=self.mean, variance=self.variance,
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


@keras.saving.register_keras_serializable(package="fraud")  # the package of saved checkpoints
class Autoencoder(AnomalyDetector):
    """Dense autoencoder: features -> hidden -> code -> hidden -> features, tanh units;
    score = mean squared error of the reconstruction in standardised units."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        self.encoder = keras.Sequential(
            [keras.layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             keras.layers.Dense(code_units(n_features), activation=ACTIVATION)],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [keras.layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             keras.layers.Dense(n_features)],
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


@keras.saving.register_keras_serializable(package="fraud")  # the package of saved checkpoints
class VariationalAutoencoder(AnomalyDetector):
    """VAE with a Gaussian encoder q(c | z) and a Gaussian decoder p(z | c) whose variance is
    learned per feature and per row. Loss: the negative ELBO, -E_q[log p(z | c)] + KL(q || N(0, I)),
    the expectation estimated with one reparameterised sample. Score: the same with the sample
    replaced by the posterior mean, -log p(z | mean of q) + KL(q || N(0, I)), where

        -log p(z | c) = 1/2 sum_i [(z_i - mu_i)^2 / sigma_i^2 + log sigma_i^2]   (no constant)
        KL = -1/2 sum_j [1 + log s_j^2 - m_j^2 - s_j^2]

    with (mu, log sigma^2) the decoder's halves (log sigma^2 floored at MIN_LOG_VARIANCE) and
    (m, log s^2) the encoder's."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        code = code_units(n_features)
        self.encoder = keras.Sequential(
            [keras.layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             keras.layers.Dense(2 * code)],
            name="encoder",
        )
        self.decoder = keras.Sequential(
            [keras.layers.Dense(hidden_units(n_features), activation=ACTIVATION),
             keras.layers.Dense(2 * n_features)],
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


@keras.saving.register_keras_serializable(package="fraud")  # the package of saved checkpoints
class RBMDetector(AnomalyDetector):
    """A Gaussian-Bernoulli RBM on the standardised rows; score = free energy F(z). Trained
    outside `fit` of this model by its `rbm_trainer` (CD-k), which updates the same `rbm`
    layer."""

    def __init__(self, n_features, log_mask, mean, variance, **kwargs):
        super().__init__(n_features, log_mask, mean, variance, **kwargs)
        self.rbm = RBM(RBM_HIDDEN_UNITS, visible="gaussian", name="rbm")
        self.rbm.build((None, self.n_features))  # the score reads its weights, not its call

    def score_standardized(self, z):
        return self.rbm.free_energy(z)


def rbm_trainer(detector: RBMDetector, learning_rate: float) -> RBMTrainer:
    """CD-k for the detector's RBM, on standardised rows (`detector.standardize`): SGD with
    momentum and weight decay, as Hinton's "A practical guide to training RBMs" (2010)
    recommends. Call it in the strategy's scope."""
    trainer = RBMTrainer(detector.rbm, k=RBM_CD_STEPS, seed=detector.seed)
    trainer.build((None, detector.n_features))  # a backup restores into built variables
    trainer.compile(optimizer=keras.optimizers.SGD(
        learning_rate, momentum=RBM_MOMENTUM, weight_decay=RBM_WEIGHT_DECAY))
    return trainer


DETECTORS = {"autoencoder": Autoencoder, "vae": VariationalAutoencoder, "rbm": RBMDetector}


def build_detector(model_name: str, feature_names, log_features, train_normals: np.ndarray,
                   seed: int = 42) -> AnomalyDetector:
    """The detector `model_name` (a key of DETECTORS) for rows of `feature_names`, its scaling
    statistics from `train_normals` [rows, features] (the `log_features` read as log(1 + x)),
    its weights created."""
    if model_name not in DETECTORS:
        raise ValueError(f"unknown detector {model_name!r}; choose from {', '.join(DETECTORS)}")
    log_mask = [float(name in log_features) for name in feature_names]
    mean, variance = scaling_statistics(train_normals, log_mask)
    detector = DETECTORS[model_name](len(feature_names), log_mask, mean, variance, seed=seed,
                                     name=model_name)
    detector(np.zeros((1, len(feature_names)), "float32"))  # creates the weights
    return detector


def score(detector: AnomalyDetector, features: np.ndarray) -> np.ndarray:
    """Scores of raw rows [rows, features] -> [rows], in batches of 4,096."""
    return detector.predict(np.asarray(features, "float32"), batch_size=4_096, verbose=0)


# ---------------------------------------------------------------------------------------------
# From scores to flags
# ---------------------------------------------------------------------------------------------


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


def served_figures(labels: np.ndarray, scores: np.ndarray, flags: np.ndarray,
                   evaluated: np.ndarray, threshold: float) -> dict:
    """What a served path's `scores` and `flags` of the test rows measure, beside `evaluated`,
    evaluate's scores of the same rows (the skew check): the figures of `detection_figures`,
    F1 from the path's own flags, and how far its flags and scores are from evaluate's."""
    figures = detection_figures(labels, scores, threshold)
    return {"test ROC-AUC": figures["roc_auc"], "test PR-AUC": figures["pr_auc"],
            "test F1 at the threshold": detection_figures(labels, flags.astype("float32"),
                                                          0.5)["f1"],
            "flags as evaluate's": float((flags == (evaluated > threshold)).mean()),
            "largest |score - evaluate's|": float(np.abs(scores - evaluated).max())}


# ---------------------------------------------------------------------------------------------
# Serving
# ---------------------------------------------------------------------------------------------

STANDARDIZED_SIGNATURE = "score_standardized"


def serving_archive(detector: AnomalyDetector, input_names: list[str], threshold: float,
                    calibration: np.ndarray | None = None) -> keras.export.ExportArchive:
    """Two endpoints, both returning `score` and `is_anomaly` (score > the baked threshold):

    - `serving_default`: one float32 [batch] input per raw feature column, `input_names` in the
      detector's column order. Named columns are what a TF Serving client has:
      `{"instances": [{"amount_ratio": 4.2, "hour": 3.5, ...}]}` is a CSV row as JSON, without
      knowing the model's column order.
    - `score_standardized`: `features` float32 [batch, features], already log-transformed and
      standardised (what the int8 .tflite takes, calibrated on the rows `calibration`).

    `score_standardized` flags in a unit that makes the calibrated score range 64 wide: TFLite
    compares int8 tensors in real units rounded to 1/256 and needs a scale below 1, which a
    score whose range (0 included) spans more than 255 does not have (the VAE's and the RBM's
    on ULB's rows): it would flag nothing.
    """
    unit = 1.0
    if calibration is not None:
        scores = detector.score_standardized(calibration).numpy()
        unit = max(float(np.ptp(np.r_[scores, 0.0])), 1e-6) / 64
    archive = keras.export.ExportArchive()
    archive.track(detector)

    def serve(columns):
        rows = tf.stack([columns[name] for name in input_names], axis=1)  # [batch, features]
        scores = detector(rows, training=False)
        return {"score": scores, "is_anomaly": scores > threshold}

    def serve_standardized(features):
        scores = detector.score_standardized(features)
        return {"score": scores, "is_anomaly": scores * (1 / unit) > threshold / unit}

    archive.add_endpoint(
        "serving_default", serve,
        input_signature=[{name: tf.TensorSpec([None], tf.float32, name=name)
                          for name in input_names}],
    )
    archive.add_endpoint(
        STANDARDIZED_SIGNATURE, serve_standardized,
        input_signature=[tf.TensorSpec([None, len(input_names)], tf.float32, name="features")],
    )
    return archive


# ---------------------------------------------------------------------------------------------
# While training: the epoch that detects best
# ---------------------------------------------------------------------------------------------


class ValidationDetection(keras.callbacks.Callback):
    """Adds `val_pr_auc`, the average precision of the detector's scores on the labelled
    validation split, to each epoch's logs (before the checkpoint and CSV callbacks read them).

    Why not the validation loss: an autoencoder keeps lowering its reconstruction error by
    learning to rebuild more of everything, frauds included; its detection peaks and then
    declines while the loss still falls. With labelled validation rows, the epoch that
    detects best is the one to keep. With `save_to`, it also keeps the best detector itself
    (for the RBM, whose fitted model is its trainer)."""

    def __init__(self, detector: AnomalyDetector, validation: Table,
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
