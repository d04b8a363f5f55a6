"""Training pieces shared by the sequence models (translation and captioning): a cross-entropy and
an accuracy over real tokens only, an Adam whose gradient clipping sees the global batch, and the
one way both compile a teacher-forced model with them.

All three are written for MirroredStrategy: a replica holds a slice of the batch with its own
number of real tokens, and Keras sums the replicas' gradients, so each divides or clips by what
the whole global batch holds, and training on N replicas computes what one device would.
"""

import keras
import tensorflow as tf
from keras import ops

from pipelines.text_pairs import PAD

# Registered under the package they had in apps/translation.py: saved checkpoints name it.
PACKAGE = "translation"
WARMUP_SHARE = 0.05  # of the steps, before the cosine decay
CLIP_NORM = 1.0  # RNN gradients can spike; clipping keeps one bad batch from wrecking the run


def sum_over_replicas(value):
    """`value` summed over the replicas that run this step together (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedCrossEntropy(keras.losses.Loss):
    """Mean cross-entropy over the real (non-padding) target tokens of a batch, with optional
    label smoothing: a share of the target probability spread over the whole vocabulary."""

    def __init__(self, label_smoothing=0.0, name="masked_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        mask = ops.cast(ops.not_equal(y_true, PAD), "float32")
        log_probs = ops.log_softmax(y_pred, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(y_true, -1), -1), -1)
        if self.label_smoothing:
            uniform = -ops.mean(log_probs, axis=-1)
            nll = (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform
        # Dividing by the whole global batch's token count makes the optimizer's sum of the
        # replicas' gradients the gradient of the batch's mean, as on one device.
        return ops.sum(nll * mask) / ops.maximum(sum_over_replicas(ops.sum(mask)), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedAccuracy(keras.metrics.Metric):
    """Share of real (non-padding) target tokens predicted right under teacher forcing, counted
    over all tokens of the epoch (a mean of per-batch shares would overweight small batches)."""

    def __init__(self, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable((), initializer="zeros", name="right", aggregation="sum")
        self.total = self.add_variable((), initializer="zeros", name="total", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        mask = ops.cast(ops.not_equal(y_true, PAD), "float32")
        right = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), "int32")),
                         "float32")
        self.right.assign_add(ops.sum(right * mask))
        self.total.assign_add(ops.sum(mask))

    def result(self):
        return self.right / ops.maximum(self.total, 1.0)

    def reset_state(self):
        self.right.assign(0.0)
        self.total.assign(0.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GlobalClipAdam(keras.optimizers.Adam):
    """Adam whose `global_clipnorm` measures the gradient of the whole global batch.

    Under MirroredStrategy, Keras 3.15 clips each replica's gradient before it sums them
    (`_clip_gradients` runs before the all-reduce in `apply`): two replicas would clip two
    half-batch gradients, a different update from one device's. Here the replicas first sum
    their gradients to measure the norm (one all-reduce more per step), then each scales its
    own share by the same factor, so the sum is the clipped gradient of the global batch."""

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if (not self.global_clipnorm or context is None
                or context.num_replicas_in_sync == 1):
            return super()._clip_gradients(grads)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                   [g for g in grads if g is not None])
        norm = tf.linalg.global_norm(total)
        scale = self.global_clipnorm * tf.minimum(1.0 / norm, 1.0 / self.global_clipnorm)
        return [None if g is None else g * scale for g in grads]


def warmup_cosine_adam(steps: int, learning_rate: float, warmup_share: float,
                       clip_norm: float) -> GlobalClipAdam:
    """Adam rising linearly to `learning_rate` over the first `warmup_share` of `steps`, then
    along a cosine to zero; gradients clipped to `clip_norm` over the global batch."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps, 1), warmup_target=learning_rate,
        warmup_steps=max(int(warmup_share * steps), 1),
    )
    return GlobalClipAdam(schedule, global_clipnorm=clip_norm)


def compile_teacher_forced(model: keras.Model, steps: int, learning_rate: float,
                           label_smoothing: float = 0.0, **compile_options) -> keras.Model:
    """Masked cross-entropy and accuracy, Adam with warm-up and cosine decay over `steps`
    peaking at `learning_rate`: the rate for the global batch (the apps scale the per-replica
    rate with the replicas)."""
    model.compile(optimizer=warmup_cosine_adam(steps, learning_rate, WARMUP_SHARE, CLIP_NORM),
                  loss=MaskedCrossEntropy(label_smoothing), metrics=[MaskedAccuracy()],
                  **compile_options)
    return model


def in_float32(model: keras.Model) -> keras.Model:
    """Decoding, export and phones compute in float32, whatever precision trained the weights
    (`--mixed-precision` trains in float16 on GPUs; the weights are float32 either way)."""
    for layer in model._flatten_layers():
        layer.dtype_policy = "float32"
    return model
