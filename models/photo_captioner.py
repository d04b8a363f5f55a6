"""Captioning real photos: an ImageNet-pretrained MobileNetV2 reads a photo into a 7x7 grid of
region features, an LSTM with soft attention over the grid writes the caption.

Show, Attend and Tell (Xu et al., 2015, arXiv:1502.03044) with what came after it:

    photo uint8 [batch, 224, 224, 3] -> x / 127.5 - 1 -> MobileNetV2 (frozen, no top)
        -> grid [batch, 7, 7, 1280] -> regions [batch, 49, 1280]        (cached, float16)
    RegionHead: regions -> memory [batch, 49, D] (dense + ReLU, dropout)
                mean of the regions -> initial LSTM state [h, c] (tanh)     (Xu's f_init)
    PhotoDecoder, at each word t:
        h_t = LSTM(embedding(word_{t-1}), h_{t-1})
        alpha_t = softmax_i(v . tanh(W_m m_i + W_h h_t))           additive (Xu's f_att)
        z_t = sigmoid(w_b . h_t) * sum_i alpha_ti m_i               Xu's gate beta
        logits = W_o dropout(tanh(E word_{t-1} + L_h h_t + L_z z_t))  Xu's deep output
    loss = cross-entropy + lambda * mean_i (1 - sum_t alpha_ti)^2    doubly stochastic attention

The query is the LSTM's current output h_t (as in Lu et al., 2017, "Knowing when to look"),
not h_{t-1} fed back into the LSTM: teacher forcing then runs the LSTM over the whole caption in
one call, and attention, gate and output for all words at once, which is what lets a CPU train it.

`--decoder transformer` swaps the LSTM for `layers.transformer.TransformerDecoder` (Vaswani et
al., 2017), the translator's, whose cross-attention reads the regions instead of a sentence:

    TransformerRegionHead: regions -> LayerNorm(W regions + row_i + column_i)  [batch, 49, D]
                           (a learned position per grid row and per grid column), dropout
    PhotoTransformerDecoder: N x (causal self-attention, cross-attention on the 49 regions, FFN),
                           pre-layer-norm; decoding keeps each layer's keys and values in a
                           fixed-size cache, reordered with the beams like the LSTM's [h, c]

No encoder self-attention over the regions: MobileNetV2's last block already mixes a 7x7 grid
whose receptive fields cover the photo, and the decoder's own layers relate the regions it reads.

The encoder is frozen, so each photo's grid is computed once per run and kept on disk in
float16 (`pipelines.region_grids`); training reads grids, not photos, and the model it trains
(`build_photo_models`' second model) starts at the grid. The first model starts at the photo,
shares every weight, and is what is saved, evaluated, served and exported.

Weights come from a local `.weights.h5` file (nothing is downloaded unless "imagenet" is asked
for): Keras 3 stores each variable under its layer's path (`layers/conv2d_3/vars/0`), and
`check_backbone_weights` compares every path and shape with MobileNetV2 at the asked alpha
before loading, so a file of another alpha or architecture is one line, not a traceback.
"""

import functools
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.beam_search import EncoderDecoderSearch
from layers.transformer import TransformerDecoder
from pipelines import DataError, text_pairs

BACKBONE = "mobilenet_v2"
ALPHAS = (0.35, 1.0, 0.5, 0.75, 1.3, 1.4)  # MobileNetV2's width multipliers, likeliest first
PHOTO_SIZE = 224  # MobileNetV2's ImageNet size: a 7x7 grid of 32-pixel regions
MEMORY_DIM = 512  # each region projected to this
UNITS = 512  # LSTM
EMBEDDING_DIM = 256
ATTENTION_DIM = 256
DROPOUT = 0.5  # on the projected regions and on the deep output, as in Xu et al.
ATTENTION_PENALTY = 1.0  # Xu et al.'s lambda for the doubly stochastic attention
DECODERS = ("attention", "transformer")  # the attention LSTM, or the Transformer decoder
# --decoder transformer: the translator's base sizes. A training step costs about 1.4x the LSTM's
# (1.6 against 1.2 CPU-seconds for 32 photos x 5 captions), so the same CPU budget buys fewer
# epochs; dropout stays at Vaswani et al.'s 0.1, as a run that short underfits before it overfits.
TRANSFORMER_LAYERS = 3
TRANSFORMER_HEADS = 4  # 64 wide each
D_MODEL = 256  # the regions are projected to this too
TRANSFORMER_FF = 1024
TRANSFORMER_DROPOUT = 0.1
LABEL_SMOOTHING = 0.1  # Vaswani et al.'s; the LSTM trains without
# --fine-tune-encoder: MobileNetV2 above this layer (block_16 and Conv_1) trains with the decoder,
# over a cache of this layer's output ([7, 7, 160] a photo, float16), for a few epochs at a
# rate below the decoder's own.
FINE_TUNE_CUT = "block_15_add"
FINE_TUNE_EPOCHS = 3
FINE_TUNE_LEARNING_RATE = 3e-4


# ---------------------------------------------------------------------------------------------
# The pretrained backbone and its weights file
# ---------------------------------------------------------------------------------------------


def mobilenet_v2(alpha: float, image_size: int = PHOTO_SIZE, weights=None) -> keras.Model:
    return keras.applications.MobileNetV2(alpha=alpha, include_top=False, weights=weights,
                                          input_shape=(image_size, image_size, 3))


def file_shapes(path: Path) -> dict[str, tuple]:
    """Every variable of a Keras `.weights.h5` file: {layer path/vars/i: shape}."""
    import h5py

    shapes: dict[str, tuple] = {}
    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(lambda name, item: shapes.__setitem__(name, tuple(item.shape))
                              if isinstance(item, h5py.Dataset) else None)
    except OSError as error:
        raise DataError(f"{path}: not a Keras weights file ({error})") from None
    return shapes


@functools.cache
def backbone_shapes(alpha: float) -> dict[str, tuple]:
    """What MobileNetV2 at `alpha` writes into a weights file (the size does not matter)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reference.weights.h5"
        mobilenet_v2(alpha, 96).save_weights(path)
        return file_shapes(path)


def check_backbone_weights(path: str | Path, alpha: float | None = None) -> float:
    """The alpha of a MobileNetV2 no-top weights file, checked path by path and shape by shape
    against the network (against `alpha` when given). DataError names the file and what is
    wrong: missing, not HDF5, another alpha, another architecture."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such weights file (--encoder-weights)")
    shapes = file_shapes(path)
    count = sum(int(np.prod(s)) for s in shapes.values())
    found = next((a for a in ALPHAS if sum(int(np.prod(s)) for s in backbone_shapes(a).values())
                  == count and backbone_shapes(a) == shapes), None)
    if found is None:
        raise DataError(f"{path}: not MobileNetV2 no-top weights ({len(shapes)} variables,"
                        f" {count:,} values; MobileNetV2 alpha {alpha or 1.0} has"
                        f" {len(backbone_shapes(alpha or 1.0))})")
    if alpha is not None and not np.isclose(found, alpha):
        raise DataError(f"{path}: MobileNetV2 alpha {found} weights, not alpha {alpha}"
                        " (--encoder-alpha)")
    return found


# ---------------------------------------------------------------------------------------------
# Encoder: photo -> region grid -> memory and initial state
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="captioning")
class RegionHead(keras.layers.Layer):
    """regions [batch, R, C] (float16 from the cache, or float32) -> (memory [batch, R, D],
    region mask [batch, R] of ones, [h, c]): what the decoder attends over and starts from."""

    def __init__(self, memory_dim=MEMORY_DIM, units=UNITS, dropout=DROPOUT, **kwargs):
        super().__init__(**kwargs)
        self.memory_dim, self.units, self.dropout_rate = memory_dim, units, dropout
        self.project = keras.layers.Dense(memory_dim, activation="relu", name="regions")
        self.dropout = keras.layers.Dropout(dropout)
        self.bridges = [keras.layers.Dense(units, activation="tanh", name=f"bridge_{i}")
                        for i in range(2)]  # LSTM h and c, from the mean region (Xu's f_init)

    def call(self, regions, training=None):
        regions = ops.cast(regions, "float32")
        memory = self.dropout(self.project(regions), training=training)
        pooled = ops.mean(regions, axis=1)
        mask = ops.ones(ops.shape(regions)[:2], "float32")
        return memory, mask, [bridge(pooled) for bridge in self.bridges]

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "memory_dim": self.memory_dim, "units": self.units,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="captioning")
class TransformerRegionHead(keras.layers.Layer):
    """regions [batch, R, C] -> (memory [batch, R, D], region mask [batch, R] of ones, no state):
    the Transformer decoder's memory. Attention has no notion of where a region is, so each one
    gets a learned vector for its grid row and one for its column (2 x 7 x D values instead of
    49 x D: neighbours share them), added before a layer norm that puts the projected ReLU6
    features on the scale of the decoder's normalised stream. The decoder's cache starts empty
    (`TransformerDecoder.start_state`), so there is no initial state to compute."""

    def __init__(self, side: int, width: int = D_MODEL, dropout: float = TRANSFORMER_DROPOUT,
                 **kwargs):
        super().__init__(**kwargs)
        self.side, self.width, self.dropout_rate = int(side), int(width), dropout
        self.project = keras.layers.Dense(width, name="regions")
        # Drawn at unit scale, like the projected features they are added to: at Keras' default
        # (uniform within 0.05) the layer norm all but erases them, and a toy decoder that must
        # say which region holds a pattern learns the colour but not the place.
        where = keras.initializers.RandomNormal(stddev=1.0)
        self.rows = keras.layers.Embedding(self.side, width, embeddings_initializer=where,
                                           name="rows")
        self.columns = keras.layers.Embedding(self.side, width, embeddings_initializer=where,
                                              name="columns")
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, regions, training=None):
        regions = ops.cast(regions, "float32")
        cells = ops.arange(self.side)
        # Region r of the row-major grid sits at row r // side and column r % side.
        where = (ops.repeat(self.rows(cells), self.side, axis=0)
                 + ops.tile(self.columns(cells), (self.side, 1)))  # [R, D]
        memory = self.norm(self.project(regions) + where[None])
        mask = ops.ones(ops.shape(regions)[:2], "float32")
        return self.dropout(memory, training=training), mask, []

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "side": self.side, "width": self.width,
                "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="captioning")
class PhotoEncoder(keras.layers.Layer):
    """uint8 photo [batch, S, S, 3] -> the head's outputs (RegionHead's for the LSTM,
    TransformerRegionHead's for the Transformer), through MobileNetV2 (frozen) with its
    preprocessing (x / 127.5 - 1) inside. `grid` is the part the cache stores."""

    def __init__(self, alpha=1.0, image_size=PHOTO_SIZE, memory_dim=MEMORY_DIM, units=UNITS,
                 dropout=DROPOUT, decoder="attention", members=1, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.image_size = float(alpha), int(image_size)
        self.memory_dim, self.units, self.dropout_rate = memory_dim, units, dropout
        self.decoder, self.members = decoder, int(members)
        self.backbone = mobilenet_v2(self.alpha, self.image_size)
        self.backbone.trainable = False
        if decoder == "transformer":
            self.head = TransformerRegionHead(self.image_size // 32, memory_dim, dropout,
                                              name="head")
        elif self.members > 1:
            self.head = EnsembleHead(self.members, memory_dim, units, dropout, name="head")
        else:
            self.head = RegionHead(memory_dim, units, dropout, name="head")

    def grid(self, images):
        """uint8 [batch, S, S, 3] -> regions float32 [batch, (S/32)^2, 1280]."""
        x = keras.applications.mobilenet_v2.preprocess_input(ops.cast(images, "float32"))
        features = self.backbone(x, training=False)  # [batch, 7, 7, 1280]
        return ops.reshape(features, (ops.shape(features)[0], -1, features.shape[-1]))

    def call(self, images, training=None):
        return self.head(self.grid(images), training=training)

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "image_size": self.image_size,
                "memory_dim": self.memory_dim, "units": self.units,
                "dropout": self.dropout_rate, "decoder": self.decoder, "members": self.members}


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="captioning")
class PhotoDecoder(keras.layers.Layer):
    """The attention LSTM above, with the interface of `layers.attention.AttentionDecoder`
    (`prepare_memory`, whole-caption `call`, one-word `step`), so `layers.beam_search` and the
    LiteRT runner drive it as they drive the others. In training it adds the doubly stochastic
    attention penalty to the model's losses."""

    def __init__(self, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS,
                 attention_dim=ATTENTION_DIM, dropout=DROPOUT, penalty=ATTENTION_PENALTY,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.attention_dim, self.dropout_rate, self.penalty = attention_dim, dropout, penalty
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.rnn = keras.layers.LSTM(units, return_sequences=True, return_state=True,
                                     name="lstm")
        self.memory_keys = keras.layers.Dense(attention_dim, use_bias=False, name="memory_keys")
        self.query = keras.layers.Dense(attention_dim, name="query")
        self.score = keras.layers.Dense(1, use_bias=False, name="score")
        self.gate = keras.layers.Dense(1, activation="sigmoid", name="gate")
        self.from_hidden = keras.layers.Dense(embedding_dim, name="deep_hidden")
        self.from_context = keras.layers.Dense(embedding_dim, use_bias=False,
                                               name="deep_context")
        self.dropout = keras.layers.Dropout(dropout)
        self.output_dense = keras.layers.Dense(vocab_size, name="logits")
        self.state_count = 2

    def prepare_memory(self, memory):
        return self.memory_keys(memory)  # [batch, R, A], once per photo

    def _predict(self, embedded, outputs, memory, keys, memory_mask, training=None):
        """embedded [b, T, E], outputs [b, T, U] -> logits [b, T, V], weights [b, T, R]."""
        hidden = ops.tanh(keys[:, None, :, :] + self.query(outputs)[:, :, None, :])
        scores = ops.squeeze(self.score(hidden), -1)  # [b, T, R]
        mask = ops.cast(memory_mask, "float32")[:, None, :]
        weights = ops.softmax(ops.cast(scores, "float32") + (1.0 - mask) * -1e9, axis=-1)
        context = ops.einsum("btr,brd->btd", weights, memory) * self.gate(outputs)
        deep = ops.tanh(embedded + self.from_hidden(outputs) + self.from_context(context))
        return self.output_dense(self.dropout(deep, training=training)), weights

    def call(self, tokens, memory, memory_mask, initial_state, return_attention=False,
             training=None):
        embedded = self.embedding(tokens)
        outputs = self.rnn(embedded, initial_state=list(initial_state), training=training)[0]
        logits, weights = self._predict(embedded, outputs, memory, self.prepare_memory(memory),
                                        memory_mask, training)
        if training and self.penalty:
            # Xu et al.'s doubly stochastic attention: over the caption's real words, every
            # region should get about as much attention in all (sum over t near 1).
            words = ops.cast(ops.not_equal(tokens, text_pairs.PAD), "float32")[:, :, None]
            per_region = ops.sum(weights * words, axis=1)  # [b, R]
            self.add_loss(self.penalty * ops.mean(ops.square(1.0 - per_region)))
        return (logits, weights) if return_attention else logits

    def step(self, tokens, state, memory, keys, memory_mask):
        """tokens [b] -> (log_probs [b, V], [h, c], attention weights [b, R])."""
        embedded = self.embedding(tokens)
        output, new_state = self.rnn.cell(embedded, list(state))
        logits, weights = self._predict(embedded[:, None], output[:, None], memory, keys,
                                        memory_mask)
        return ops.log_softmax(logits[:, 0], axis=-1), list(new_state), weights[:, 0]

    def build(self, *args, **kwargs):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim, "units": self.units,
                "attention_dim": self.attention_dim, "dropout": self.dropout_rate,
                "penalty": self.penalty}


@keras.saving.register_keras_serializable(package="captioning")
class PhotoTransformerDecoder(TransformerDecoder):
    """`layers.transformer.TransformerDecoder` (its `prepare_memory`, `start_state` and cached
    `step` as they are) with PhotoDecoder's `call`: an `initial_state` to ignore (the cache
    starts empty), the cross-attention of the last layer averaged over the heads, [b, T, R],
    for the attention maps, and `per_memory`: K captions per memory row (the grid model's
    batches), so that the regions' keys and values are computed once per photo, not K times."""

    def call(self, tokens, memory, memory_mask, initial_state=None, return_attention=False,
             per_memory=1, training=None):
        keys = self.prepare_memory(memory)  # [b, layers, 2, heads, R, D / heads]
        if per_memory > 1:
            keys = ops.repeat(keys, per_memory, axis=0)
            memory_mask = ops.repeat(memory_mask, per_memory, axis=0)
        steps = ops.shape(tokens)[1]
        causal = ops.arange(steps)[:, None] >= ops.arange(steps)[None, :]  # [T, T]
        logits, weights = self._blocks(
            self.embed(tokens, training=training), keys, memory_mask, causal[None, None],
            lambda i, h: self.self_attentions[i].project(h), training)
        return (logits, ops.mean(weights, axis=1)) if return_attention else logits


# ---------------------------------------------------------------------------------------------
# An ensemble: N attention LSTMs trained apart on the same grids, writing one caption together
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="captioning")
class EnsembleHead(keras.layers.Layer):
    """N RegionHeads, one per member (`--members`), over the same regions: memory
    [b, R, N * D] (the members' side by side), the region mask, and [h, c] each [b, N, U].
    Stacking the members' states keeps the interface of one LSTM's two state tensors, so the
    beam search, the SavedModel and the LiteRT decoder file carry an ensemble unchanged."""

    def __init__(self, members, memory_dim=MEMORY_DIM, units=UNITS, dropout=DROPOUT, **kwargs):
        super().__init__(**kwargs)
        self.members, self.memory_dim, self.units = int(members), memory_dim, units
        self.dropout_rate = dropout
        self.heads = [RegionHead(memory_dim, units, dropout, name=f"head_{k}")
                      for k in range(self.members)]

    def call(self, regions, training=None):
        outputs = [head(regions, training=training) for head in self.heads]
        memory = ops.concatenate([memory for memory, _, _ in outputs], axis=-1)
        state = [ops.stack([s[i] for _, _, s in outputs], axis=1) for i in range(2)]
        return memory, outputs[0][1], state

    def build(self, input_shape=None):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "members": self.members, "memory_dim": self.memory_dim,
                "units": self.units, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="captioning")
class EnsembleDecoder(keras.layers.Layer):
    """N PhotoDecoders with PhotoDecoder's interface: each reads its own slice of the memory
    and of the stacked state; the next word's distribution is the mean of their probabilities
    (as log-probabilities, which serve as logits). Attention maps are the members' mean."""

    def __init__(self, members, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS,
                 attention_dim=ATTENTION_DIM, dropout=DROPOUT, penalty=ATTENTION_PENALTY,
                 **kwargs):
        super().__init__(**kwargs)
        self.members, self.vocab_size = int(members), vocab_size
        self.sizes = {"embedding_dim": embedding_dim, "units": units,
                      "attention_dim": attention_dim, "dropout": dropout, "penalty": penalty}
        self.decoders = [PhotoDecoder(vocab_size, **self.sizes, name=f"decoder_{k}")
                         for k in range(self.members)]
        self.state_count = 2

    def _mean(self, log_probs):  # N x [..., V] -> log of the mean probability
        return ops.logsumexp(ops.stack(log_probs), axis=0) - float(np.log(self.members))

    def _member_state(self, state, k):
        return [state[0][:, k], state[1][:, k]]

    def prepare_memory(self, memory):
        parts = ops.split(memory, self.members, axis=-1)
        return ops.concatenate([d.prepare_memory(m) for d, m in zip(self.decoders, parts)],
                               axis=-1)

    def call(self, tokens, memory, memory_mask, initial_state, return_attention=False,
             training=None):
        outputs = [decoder(tokens, part, memory_mask, self._member_state(initial_state, k),
                           return_attention=True, training=training)
                   for k, (decoder, part) in enumerate(
                       zip(self.decoders, ops.split(memory, self.members, axis=-1)))]
        logits = self._mean([ops.log_softmax(logits, axis=-1) for logits, _ in outputs])
        weights = ops.mean(ops.stack([w for _, w in outputs]), axis=0)
        return (logits, weights) if return_attention else logits

    def step(self, tokens, state, memory, keys, memory_mask):
        """tokens [b] -> (log_probs [b, V], stacked [h, c], mean attention weights [b, R])."""
        steps = [decoder.step(tokens, self._member_state(state, k), part, part_keys,
                              memory_mask)
                 for k, (decoder, part, part_keys) in enumerate(zip(
                     self.decoders, ops.split(memory, self.members, axis=-1),
                     ops.split(keys, self.members, axis=-1)))]
        new_state = [ops.stack([s[i] for _, s, _ in steps], axis=1) for i in range(2)]
        weights = ops.mean(ops.stack([w for _, _, w in steps]), axis=0)
        return self._mean([log_probs for log_probs, _, _ in steps]), new_state, weights

    def build(self, *args, **kwargs):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "members": self.members,
                "vocab_size": self.vocab_size, **self.sizes}


def join_members(ensemble: keras.Model, members: list[keras.Model]) -> keras.Model:
    """Copies each trained member photo model's head and decoder into its place in `ensemble`
    (`build_photo_models(members=N)`'s photo model), and the first member's MobileNetV2, which
    every member read its grids through (its top fine-tuned with it, or as pretrained)."""
    head, decoder = ensemble.get_layer("encoder").head, ensemble.get_layer("decoder")
    ensemble.get_layer("encoder").backbone.set_weights(
        members[0].get_layer("encoder").backbone.get_weights())
    for k, member in enumerate(members):
        head.heads[k].set_weights(member.get_layer("encoder").head.get_weights())
        decoder.decoders[k].set_weights(member.get_layer("decoder").get_weights())
    return ensemble


def build_photo_models(vocab_size: int, alpha: float, captions_per_photo: int,
                       caption_length: int, image_size: int = PHOTO_SIZE,
                       embedding_dim: int = EMBEDDING_DIM, units: int = UNITS,
                       memory_dim: int | None = None, dropout: float | None = None,
                       penalty: float = ATTENTION_PENALTY, decoder: str = "attention",
                       layers: int = TRANSFORMER_LAYERS, heads: int = TRANSFORMER_HEADS,
                       ff: int = TRANSFORMER_FF, weights: str | None = None,
                       members: int = 1) -> tuple[keras.Model, keras.Model]:
    """(photo model, grid model), sharing every weight:

        photo model: (photo uint8 [b, S, S, 3], caption_in [b, T]) -> logits [b, T, V]
        grid model:  (regions float16 [b, R, 1280], captions_in [b, K, L]) -> logits [b*K, L, V]

    The grid model trains: each cached grid is read once per batch with all K of its captions
    (rows b*K + k), so the region projection runs once per photo, not once per caption.
    `decoder`: "attention" (the LSTM: `embedding_dim`, `units`, `penalty`) or "transformer"
    (`layers`, `heads`, `ff`, its cache `caption_length` positions long); `memory_dim` (the
    Transformer's d_model) and `dropout` default to each decoder's own.
    `weights`: a checked MobileNetV2 weights file, or "imagenet" (a download). `members` > 1:
    an ensemble of that many attention LSTMs (EnsembleHead, EnsembleDecoder), to be filled
    from trained members by `join_members`."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: choose from {', '.join(DECODERS)}")
    if members > 1 and decoder != "attention":
        raise ValueError("an ensemble (members > 1) is of attention LSTMs")
    transformer = decoder == "transformer"
    memory_dim = memory_dim or (D_MODEL if transformer else MEMORY_DIM)
    dropout = dropout if dropout is not None else (TRANSFORMER_DROPOUT if transformer
                                                   else DROPOUT)
    encoder = PhotoEncoder(alpha, image_size, memory_dim, units, dropout, decoder, members,
                           name="encoder")
    if weights == "imagenet":
        encoder.backbone.set_weights(mobilenet_v2(alpha, image_size, "imagenet").get_weights())
    elif weights:
        encoder.backbone.load_weights(weights)
    if transformer:
        decoder = PhotoTransformerDecoder(vocab_size, caption_length, layers, heads, memory_dim,
                                          ff, dropout, name="decoder")
    elif members > 1:
        decoder = EnsembleDecoder(members, vocab_size, embedding_dim, units, dropout=dropout,
                                  penalty=penalty, name="decoder")
    else:
        decoder = PhotoDecoder(vocab_size, embedding_dim, units, dropout=dropout,
                               penalty=penalty, name="decoder")
    photo = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    caption_in = keras.Input((None,), dtype="int32", name="caption_in")
    photo_model = keras.Model([photo, caption_in],
                              decoder(caption_in, *encoder(photo)), name="photo_captioner")

    grid_size = (image_size // 32) ** 2
    regions = keras.Input((grid_size, encoder.backbone.output.shape[-1]), dtype="float16",
                          name="regions")
    captions_in = keras.Input((captions_per_photo, caption_length), dtype="int32",
                              name="captions_in")
    logits = caption_logits(photo_model, regions, captions_in)
    return photo_model, keras.Model([regions, captions_in], logits, name="grid_captioner")


def caption_logits(photo_model: keras.Model, regions, captions_in):
    """regions [b, R, C] with each photo's K captions_in [b, K, L] -> logits [b*K, L, V]
    through the photo model's head and decoder (rows b*K + k)."""
    encoder, decoder = photo_model.get_layer("encoder"), photo_model.get_layer("decoder")
    per_photo, length = captions_in.shape[1], captions_in.shape[2]
    memory, mask, state = encoder.head(regions)
    captions = ops.reshape(captions_in, (-1, length))
    if encoder.decoder == "transformer":  # repeats the regions' keys and values itself
        return decoder(captions, memory, mask, per_memory=per_photo)

    def per_caption(x):  # [b, ...] -> [b * K, ...]
        return ops.repeat(x, per_photo, axis=0)

    return decoder(captions, per_caption(memory), per_caption(mask),
                   [per_caption(s) for s in state])


# ---------------------------------------------------------------------------------------------
# Fine-tuning the encoder's top: trained over a cache of what lies below it
# ---------------------------------------------------------------------------------------------


def backbone_parts(photo_model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(bottom: preprocessed photo -> [b, S/32, S/32, 160] at FINE_TUNE_CUT, top: that ->
    [b, S/32, S/32, 1280]), sub-models that share the photo model's MobileNetV2 layers."""
    backbone = photo_model.get_layer("encoder").backbone
    cut = backbone.get_layer(FINE_TUNE_CUT).output
    return (keras.Model(backbone.input, cut, name="bottom"),
            keras.Model(cut, backbone.output, name="top"))


def cut_grid_fn(photo_model: keras.Model):
    """uint8 photos [b, S, S, 3] -> [b, R, 160]: what the fine-tuning cache holds of a photo."""
    bottom, _ = backbone_parts(photo_model)

    def cut_grid(images):
        x = keras.applications.mobilenet_v2.preprocess_input(ops.cast(images, "float32"))
        features = bottom(x, training=False)
        return ops.reshape(features, (ops.shape(features)[0], -1, features.shape[-1]))

    return cut_grid


def _through_top(top: keras.Model, cut_regions):
    """[b, R, 160] -> [b, R, 1280]."""
    side = top.input.shape[1]
    features = top(ops.reshape(ops.cast(cut_regions, "float32"),
                               (-1, side, side, top.input.shape[-1])))
    return ops.reshape(features, (-1, side * side, features.shape[-1]))


def build_fine_tune_model(photo_model: keras.Model, captions_per_photo: int,
                          caption_length: int) -> keras.Model:
    """(cut regions float16 [b, R, 160], captions_in [b, K, L]) -> logits [b*K, L, V]: the grid
    model with MobileNetV2's top blocks in front of the head. Their convolutions train (0.88 M
    weights at alpha 1.0); their batch norms stay frozen (Keras runs a non-trainable
    BatchNormalization in inference mode), as photo batches of one run are too few to
    re-estimate ImageNet's statistics."""
    backbone = photo_model.get_layer("encoder").backbone
    _, top = backbone_parts(photo_model)
    backbone.trainable = True
    trained = {id(layer) for layer in top.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))}
    for layer in backbone.layers:
        layer.trainable = id(layer) in trained
    regions = keras.Input((top.input.shape[1] ** 2, top.input.shape[-1]), dtype="float16",
                          name="cut_regions")
    captions_in = keras.Input((captions_per_photo, caption_length), dtype="int32",
                              name="captions_in")
    logits = caption_logits(photo_model, _through_top(top, regions), captions_in)
    return keras.Model([regions, captions_in], logits, name="fine_tune_captioner")


def top_grids(photo_model: keras.Model, cut_regions: np.ndarray, batch_size: int = 250
              ) -> np.ndarray:
    """Cached cut regions [n, R, 160] -> float32 grids [n, R, 1280] through the photo model's
    (fine-tuned) top: what its head reads of those photos."""
    _, top = backbone_parts(photo_model)
    through = tf.function(lambda x: _through_top(top, x))
    return np.concatenate([through(tf.constant(cut_regions[i : i + batch_size])).numpy()
                           for i in range(0, len(cut_regions), batch_size)])


# ---------------------------------------------------------------------------------------------
# Decoding from cached grids
# ---------------------------------------------------------------------------------------------


class GridCaptioner(EncoderDecoderSearch):
    """Beam search from region grids (the cache, or `PhotoEncoder.grid` of photos): what picks
    the best epoch and the beam settings on validation, and scores the test photos."""

    def __init__(self, model: keras.Model, tokenizer: text_pairs.Tokenizer, max_length: int):
        super().__init__(model.get_layer("encoder").head, model.get_layer("decoder"),
                         tokenizer.size, forbidden_ids=(text_pairs.PAD, text_pairs.UNK,
                                                        text_pairs.START),
                         start_id=text_pairs.START, end_id=text_pairs.END)
        self.tokenizer, self.max_length = tokenizer, int(max_length)
        self._compiled: dict = {}

    def best_ids(self, grids: np.ndarray, beam_width: int, alpha: float,
                 batch_size: int = 250) -> list[np.ndarray]:
        key = (int(beam_width), float(alpha))
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                lambda g: self.decode(g, self.max_length, *key),
                input_signature=[tf.TensorSpec([None, *grids.shape[1:]], tf.float32)])
        out = []
        for start in range(0, len(grids), batch_size):
            found = self._compiled[key](tf.constant(grids[start : start + batch_size],
                                                    tf.float32))
            tokens, lengths = found["tokens"][:, 0].numpy(), found["lengths"][:, 0].numpy()
            out.extend(t[:n] for t, n in zip(tokens, lengths))
        return out

    def captions(self, grids: np.ndarray, beam_width: int, alpha: float) -> list[str]:
        return [self.tokenizer.text(tf.constant(ids[None])).numpy()[0].decode()
                for ids in self.best_ids(grids, beam_width, alpha)]


def photo_grids(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 photos [n, S, S, 3] -> float32 grids [n, R, 1280], the photo model's own path."""
    encoder = model.get_layer("encoder")
    grid = tf.function(encoder.grid, input_signature=[tf.TensorSpec(
        [None, *images.shape[1:]], tf.uint8)])
    return np.concatenate([grid(tf.constant(images[i : i + batch_size])).numpy()
                           for i in range(0, len(images), batch_size)])


# ---------------------------------------------------------------------------------------------
# LiteRT: an int8 encoder file and a float decoder file
# ---------------------------------------------------------------------------------------------


def lite_encoder_archive(model: keras.Model) -> keras.export.ExportArchive:
    """`encode_image`: pixels float32 [1, S, S, 3] in 0..255 -> regions [1, R, 1280], for the
    full-integer int8 `.tflite` (its int8 input holds the pixel minus 128 exactly)."""
    encoder = model.get_layer("encoder")
    archive = keras.export.ExportArchive()
    archive.track(model)
    size = encoder.image_size

    def encode_image(pixels):
        x = keras.applications.mobilenet_v2.preprocess_input(pixels)
        features = encoder.backbone(x, training=False)
        return {"regions": ops.reshape(features, (1, -1, features.shape[-1]))}

    archive.add_endpoint("encode_image", encode_image, input_signature=[
        tf.TensorSpec([1, size, size, 3], tf.float32, name="pixels")])
    return archive


def photo_search(model: keras.Model) -> EncoderDecoderSearch:
    """The photo model's decoding from cached grids: its region head, its decoder, and the tokens
    a caption never holds (padding, [UNK], a second [start])."""
    decoder = model.get_layer("decoder")
    return EncoderDecoderSearch(model.get_layer("encoder").head, decoder, decoder.vocab_size,
                                forbidden_ids=(text_pairs.PAD, text_pairs.UNK, text_pairs.START),
                                start_id=text_pairs.START, end_id=text_pairs.END)


def lite_decoder_archive(model: keras.Model) -> keras.export.ExportArchive:
    """`encode` (regions -> memory, keys, mask, state) and `decode_step`, batch 1: the greedy
    loop runs in numpy (`serving.litert_captioning`)."""
    encoder = model.get_layer("encoder")
    search = photo_search(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    regions = (encoder.image_size // 32) ** 2
    channels = encoder.backbone.output.shape[-1]
    # The shapes (and dtypes) of what `decode_step` carries, as `encode` gives them: the LSTM's
    # keys [1, R, A] and [h, c]; the Transformer's keys and values of every layer and its cache
    # with the position (int32).
    memory, keys, mask, state = search.encode(tf.zeros([1, regions, channels], tf.float32))

    def spec(tensor, name):
        return tf.TensorSpec(tensor.shape, tensor.dtype, name=name)

    def encode(regions_in):
        memory, keys, mask, state = search.encode(regions_in)
        return {"memory": memory, "keys": keys, "region_mask": mask,
                "state_0": state[0], "state_1": state[1]}

    def decode_step(token, memory, keys, region_mask, state_0, state_1):
        log_probs, state, weights = search.decode_step(token, [state_0, state_1], memory, keys,
                                                       region_mask)
        return {"log_probs": log_probs, "attention": weights,
                "state_0": state[0], "state_1": state[1]}

    archive.add_endpoint("encode", encode, input_signature=[
        tf.TensorSpec([1, regions, channels], tf.float32, name="regions")])
    archive.add_endpoint("decode_step", decode_step, input_signature=[
        tf.TensorSpec([1], tf.int32, name="token"), spec(memory, "memory"), spec(keys, "keys"),
        spec(mask, "region_mask"), spec(state[0], "state_0"), spec(state[1], "state_1")])
    return archive
