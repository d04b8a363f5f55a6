"""Spoken-digit classifiers over log-mel frames: a recurrent network with attention pooling, and
Deng & Yu's deep stacking network on stacked frame windows.

Both read what `pipelines.audio` (and its numpy twin `pipelines.wav`) make of a recording:

    features [batch, 61 frames, 40 mels]   log-mel power, 16 ms apart
    frames   [batch] int32                 how many of them hold the recording (the rest: padding)

and both first normalise each recording by itself (its mean per mel band removed, divided by its
spread): the level of a microphone and the colour of a voice matter less, which is what lets a
model hear a speaker it was not trained on. The recurrent classifier first lifts whatever lies
more than DYNAMIC_RANGE_DB below the recording's loudest cell to that floor: one speaker's quiet
room then sounds like another's hiss (the DSN, measured before this floor, hears everything).

The recurrent classifier (`build_rnn_classifier`), as speech recognisers were built before
transformers (Graves et al., 2013):

    frames -> [bidirectional LSTM or GRU] x layers -> attention pooling -> softmax over 10 digits
              [B, 61, 40] -> [B, 61, 2 units]       -> [B, 2 units]      -> [B, 10]

optionally behind a small convolutional front end (`frontend="conv"`, a CRNN as in Amodei et
al., 2016 and Cakir et al., 2017): CONV_FILTERS blocks of 3 x 3 convolutions over [frames, mels],
batch norm and ReLU, each followed by a max-pool along the mel axis only, so the frames (and their
mask) stay as they are while each frame's 40 bands become 10 x 32 local patterns that shift a
little with the pitch and formants of a voice:

    [B, 61, 40, 1] -> [B, 61, 20, 16] -> [B, 61, 10, 32] -> [B, 61, 320] -> the recurrent layers

The padding is masked everywhere: the convolutions see zeros there (the normalisation zeroes it,
and each block's output is masked again), the backward layers start from each recording's last
frame (the forward ones meet the padding only after the recording), and attention
(Bahdanau-style scores, a softmax over the frames of the recording only) does not look at it.

The deep stacking network (`build_dsn_classifier`) was made for speech (Deng & Yu, 2011: frame
windows of phone recognition). A whole digit is one window here: its frames are averaged around
SEGMENTS equally spaced points of the recording (triangular weights, so a short "two" and a long
"seven" both become SEGMENTS x 40 numbers), and the stacked vector is classified by
`layers.dsn.DeepStackingNetwork`, whose modules are trained one at a time, their upper weights
solved in closed form.
"""

import math

import keras
import tensorflow as tf
from keras import layers, ops

from layers.dsn import DeepStackingNetwork
from pipelines.wav import LOG_OFFSET, NUM_FRAMES, NUM_MELS

NUM_CLASSES = 10
FRONTENDS = ("none", "conv")
# The convolutional front end: one block per entry (its 3 x 3 filters), each halving the mel axis.
CONV_FILTERS = (16, 32)
CONV_KERNEL = 3
SEGMENTS = 16  # DSN: points along a recording at which its frames are averaged
# DSN outputs are regressions onto one-hot targets (about 0 or 1), not log-probabilities: a
# softmax of them divided by this temperature gives probabilities a confidence can be read from.
DSN_TEMPERATURE = 0.1
EPSILON = 1e-3
# The recurrent classifier hears each recording down to this many dB below its loudest cell:
# FSDD's speakers were recorded with noise floors from 12 to 40 dB below their average level,
# and the floor of the training speakers is not one a new microphone shares (bench/README.md).
DYNAMIC_RANGE_DB = 40.0
WEIGHT_FLOOR = 1e-7  # attention: the least total weight the recording's frames are divided by


@keras.saving.register_keras_serializable(package="models")
class UtteranceNormalization(layers.Layer):
    """(features [B, T, M], mask [B, T]) -> features with each recording's mean per band removed,
    divided by the recording's standard deviation, padding frames zero.

    `dynamic_range_db`: first raise every cell to at least the recording's loudest cell less this
    many dB, so that what lies below (the room's noise, or the digital silence of an edited file)
    looks the same from one recording to the next. None: no floor."""

    def __init__(self, dynamic_range_db: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dynamic_range_db = dynamic_range_db

    def call(self, features, mask):
        weights = mask[..., None]  # [B, T, 1]
        if self.dynamic_range_db is not None:
            # Padding is log(LOG_OFFSET), the least a cell can hold: a bound that keeps the
            # int8 range of this tensor that of the features themselves.
            recording = ops.where(weights > 0, features, math.log(LOG_OFFSET))
            loudest = ops.max(recording, axis=(1, 2), keepdims=True)  # [B, 1, 1]
            floor = loudest - self.dynamic_range_db * math.log(10.0) / 10.0  # dB -> ln(power)
            features = ops.maximum(features, floor)
        frames = ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
        mean = ops.sum(features * weights, axis=1, keepdims=True) / frames  # [B, 1, M]
        centred = (features - mean) * weights
        variance = ops.sum(centred**2, axis=(1, 2), keepdims=True) / (frames * NUM_MELS)
        return centred / ops.sqrt(variance + EPSILON)

    def get_config(self):
        return {**super().get_config(), "dynamic_range_db": self.dynamic_range_db}


@keras.saving.register_keras_serializable(package="models")
class BidirectionalOverFrames(layers.Layer):
    """(sequence [B, T, D], mask [B, T]) -> [B, T, 2 units]: one recurrent layer reads each
    recording forwards, another reads it backwards from its own last frame, not from the end of
    the padding. The padding comes last, so neither sees it before a frame of the recording
    (Keras' own masked `Bidirectional` gives other numbers unrolled than in its while loop, and
    the unrolled form is what converts to int8 TFLite)."""

    def __init__(self, cell: str = "lstm", units: int = 64, unroll: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.cell, self.units, self.unroll = cell, int(units), bool(unroll)
        recurrent = {"lstm": layers.LSTM, "gru": layers.GRU}[cell]
        self.forward_layer = recurrent(self.units, return_sequences=True, unroll=self.unroll,
                                       name="forward")
        self.backward_layer = recurrent(self.units, return_sequences=True, unroll=self.unroll,
                                        name="backward")

    def build(self, sequence_shape, frames_shape=None):
        self.forward_layer.build(sequence_shape)
        self.backward_layer.build(sequence_shape)

    def call(self, sequence, frames):
        steps = sequence.shape[1]
        lengths = ops.cast(frames, "int32")[:, None]  # [B, 1]
        time = ops.arange(steps, dtype="int32")[None]  # [1, T]
        # Frame t of the reversed recording is frame length - 1 - t; padding stays in place.
        source = ops.where(time < lengths, lengths - 1 - time, time)  # [B, T], its own inverse

        def reverse(x):  # a gather, exact in int8 (a one-hot matmul is not)
            return tf.gather(x, source, batch_dims=1)

        forward = self.forward_layer(sequence)  # [B, T, units]
        backward = reverse(self.backward_layer(reverse(sequence)))
        mask = ops.cast(time < lengths, sequence.dtype)[..., None]
        return ops.concatenate([forward, backward], axis=-1) * mask

    def compute_output_shape(self, sequence_shape, frames_shape=None):
        return (*sequence_shape[:-1], 2 * self.units)

    def get_config(self):
        return {**super().get_config(), "cell": self.cell, "units": self.units,
                "unroll": self.unroll}


@keras.saving.register_keras_serializable(package="models")
class AttentionPooling(layers.Layer):
    """(sequence [B, T, D], mask [B, T]) -> [B, D]: a weighted mean of the frames with weights
    softmax_t(v . tanh(W h_t + b)) over the recording's frames only."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.project = layers.Dense(self.units, activation="tanh", name="project")
        self.score = layers.Dense(1, use_bias=False, name="score")

    def build(self, sequence_shape, frames_mask_shape=None):
        self.project.build(sequence_shape)
        self.score.build((*sequence_shape[:-1], self.units))

    def call(self, sequence, frames_mask):
        scores = self.score(self.project(sequence))[..., 0]  # [B, T]
        # A softmax over all the frames, the padding's weights zeroed and the rest rescaled to
        # sum to one: the softmax over the recording's frames, exactly. Not the usual -1e9 score
        # for the padding: full-int8 TFLite quantises the scores with one scale, and with -1e9 in
        # its range every real score rounds to 0 (attention there became a plain mean).
        weights = ops.softmax(scores, axis=-1) * frames_mask  # [B, T]
        weights = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), WEIGHT_FLOOR)
        return ops.einsum("bt,btd->bd", weights, sequence)

    def compute_output_shape(self, sequence_shape, frames_mask_shape=None):
        return (sequence_shape[0], sequence_shape[-1])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="models")
class SegmentPooling(layers.Layer):
    """(features [B, T, M], mask [B, T]) -> [B, segments * M]: the recording's frames averaged
    with triangular weights around `segments` equally spaced points of it (at least the nearest
    frame each, however short the recording), stacked."""

    def __init__(self, segments: int = SEGMENTS, **kwargs):
        super().__init__(**kwargs)
        self.segments = int(segments)

    def call(self, features, mask):
        frames = ops.sum(mask, axis=1)[:, None, None]  # [B, 1, 1] frames of the recording
        spacing = frames / self.segments
        points = (ops.arange(self.segments, dtype="float32")[None, :, None] + 0.5) * spacing - 0.5
        time = ops.arange(NUM_FRAMES, dtype="float32")[None, None, :]
        weights = ops.relu(1.0 - ops.abs(points - time) / ops.maximum(spacing, 1.0))
        weights = weights * mask[:, None, :]  # [B, S, T]
        weights = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), EPSILON)
        pooled = ops.matmul(weights, features)  # [B, S, M]
        return ops.reshape(pooled, (-1, self.segments * features.shape[-1]))

    def compute_output_shape(self, features_shape, mask_shape=None):
        return (features_shape[0], self.segments * features_shape[-1])

    def get_config(self):
        return {**super().get_config(), "segments": self.segments}


def model_inputs() -> tuple[keras.KerasTensor, keras.KerasTensor, keras.KerasTensor]:
    """The inputs, and the frame mask [B, T] (1 for the recording's frames) made from `frames`.
    The frame count is an int32 input, not a float mask: a full-int8 TFLite model keeps int32
    inputs exact, and the backward layers' index arithmetic (`BidirectionalOverFrames`) must be."""
    features = keras.Input((NUM_FRAMES, NUM_MELS), name="features")
    frames = keras.Input((), dtype="int32", name="frames")
    mask = ops.cast(ops.less(ops.arange(NUM_FRAMES)[None], ops.expand_dims(frames, 1)), "float32")
    return features, frames, mask


def conv_frontend(x, mask, filters=CONV_FILTERS):
    """[B, T, M] normalised frames (zero padding) -> [B, T, M / 2^blocks * filters[-1]]: 3 x 3
    convolutions over time and mel, batch norm, ReLU and a max-pool over pairs of mel bands per
    block. Each block's output is masked, so the next one (and the recurrent layers) meets zeros
    past the recording's last frame whatever the padding held, as at its first frame. Batch norm
    is synchronised across replicas (MirroredStrategy trains as one device does) and folds into
    the convolution when exported."""
    frame_mask = mask[:, :, None, None]  # [B, T, 1, 1]
    x = x[..., None]  # [B, T, M, 1]
    for k, width in enumerate(filters):
        x = layers.Conv2D(width, CONV_KERNEL, padding="same", use_bias=False,
                          name=f"conv_{k + 1}")(x)  # [B, T, M', width]
        x = layers.BatchNormalization(synchronized=True, name=f"conv_{k + 1}_norm")(x)
        x = layers.ReLU(name=f"conv_{k + 1}_relu")(x)
        x = layers.MaxPooling2D((1, 2), name=f"conv_{k + 1}_pool")(x) * frame_mask  # M' / 2
    return layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]), name="conv_frames")(x)


def build_rnn_classifier(cell: str = "lstm", units: int = 64, num_layers: int = 2,
                         attention_units: int = 64, dropout: float = 0.3,
                         unroll: bool = False, frontend: str = "none",
                         dynamic_range_db: float | None = DYNAMIC_RANGE_DB,
                         name: str | None = None) -> keras.Model:
    """Stacked bidirectional LSTM (or GRU) over the frames, attention pooling, softmax;
    `frontend="conv"` puts `conv_frontend` before the recurrent layers (a CRNN). `unroll`: the
    recurrence written out step by step, for TFLite (see apps.speech.export).
    `dynamic_range_db`: see `UtteranceNormalization` (None: a model trained before the floor)."""
    if frontend not in FRONTENDS:
        raise ValueError(f"frontend {frontend!r}: choose from {', '.join(FRONTENDS)}")
    features, frames, mask = model_inputs()
    x = UtteranceNormalization(dynamic_range_db, name="normalize")(features, mask)  # [B, T, M]
    if frontend == "conv":
        x = conv_frontend(x, mask)  # [B, T, 320]
    for k in range(num_layers):
        x = BidirectionalOverFrames(cell, units, unroll, name=f"bi{cell}_{k + 1}")(x, frames)
        x = layers.Dropout(dropout)(x)  # [B, T, 2 units]
    pooled = AttentionPooling(attention_units, name="attention")(x, mask)  # [B, 2 units]
    probabilities = layers.Dense(NUM_CLASSES, activation="softmax", name="digit")(pooled)
    name = name or (f"bi{cell}_attention" if frontend == "none"
                    else f"{frontend}_bi{cell}_attention")
    return keras.Model({"features": features, "frames": frames}, probabilities, name=name)


def build_ensemble(members: list[keras.Model]) -> keras.Model:
    """The mean of the members' probabilities: one model with their inputs and output. Each
    member is a recurrent classifier trained on its own, from its own seed (`--members`)."""
    features, frames, _ = model_inputs()
    inputs = {"features": features, "frames": frames}
    probabilities = layers.Average(name="digit")([member(inputs) for member in members])
    return keras.Model(inputs, probabilities, name="ensemble")


def build_dsn_frontend(segments: int = SEGMENTS) -> keras.Model:
    """(features, frames) -> the stacked vector the DSN classifies, [B, segments * 40]."""
    features, frames, mask = model_inputs()
    normalized = UtteranceNormalization(name="normalize")(features, mask)
    stacked = SegmentPooling(segments, name="segments")(normalized, mask)  # [B, segments * M]
    return keras.Model({"features": features, "frames": frames}, stacked, name="dsn_frontend")


def build_dsn_classifier(frontend: keras.Model, dsn: DeepStackingNetwork,
                         temperature: float = DSN_TEMPERATURE) -> keras.Model:
    """The front end, the trained DSN and a softmax of its scores / `temperature`: one model
    with the recurrent classifier's inputs and output."""
    features, frames, _ = model_inputs()
    scores = dsn(frontend({"features": features, "frames": frames}))  # [B, 10], about one-hot
    probabilities = layers.Softmax(name="digit")(scores / temperature)
    return keras.Model({"features": features, "frames": frames}, probabilities, name="dsn")
