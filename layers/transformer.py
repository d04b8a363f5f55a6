"""The Transformer (Vaswani et al., 2017, arXiv:1706.03762) as an encoder and a decoder that plug
into `layers.beam_search` like the attention RNN of `layers.attention`.

Both stacks are pre-layer-norm (each sub-layer reads a normalised copy and adds its output to the
residual stream; Xiong et al., 2020, arXiv:2002.04745), which trains without the post-norm
model's long warm-up, and end with a layer norm:

    source ids [B, S] -> embedding * sqrt(D) + sine positions -> N x (self-attention, FFN)
                      -> memory [B, S, D], mask [B, S]
    target ids [B, T] -> embedding * sqrt(D) + sine positions
                      -> N x (causal self-attention, cross-attention on the memory, FFN)
                      -> logits [B, T, vocab]

Decoding one token at a time (`TransformerDecoder.step`) keeps every layer's self-attention keys
and values in a cache, so that a token costs one position, not the whole prefix again: the state
the beam search carries and reorders with the beams is that cache, [B, layers, 2, heads,
max_length, head_dim] (keys and values), and the position being written, [B]. The cache has a
fixed size (positions past the current one are masked), which keeps the shapes static for a
`tf.while_loop` and for LiteRT. The cross-attention keys and values of the memory are computed
once per sentence (`prepare_memory`).

Why not `keras_hub.layers.TransformerDecoder`: it keeps a cache too, but does not return the
cross-attention weights that `translate`'s heat maps draw (per head), nor accept the memory's
keys and values computed once; the blocks here are short and use Keras core only.
"""

import math

import keras
import numpy as np
from keras import ops

PAD = 0  # the token id of padding (pipelines.text_pairs.PAD)
NEG_INF = -1e9


def sine_positions(length: int, width: int) -> np.ndarray:
    """The fixed sinusoidal position encoding [length, width] of Vaswani et al."""
    positions = np.arange(length)[:, None]
    rates = 1.0 / np.power(10_000.0, (2 * (np.arange(width) // 2)) / width)
    angles = positions * rates[None, :]
    return np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles)).astype("float32")


class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over `heads` heads, with the keys and values projected apart
    (`project`) so that a decoder can keep them: a cache for its own past, the memory's once."""

    def __init__(self, heads: int, width: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.width, self.head_width = heads, width, width // heads
        self.query_dense = keras.layers.Dense(width, name="query")
        self.key_dense = keras.layers.Dense(width, name="key")
        self.value_dense = keras.layers.Dense(width, name="value")
        self.output_dense = keras.layers.Dense(width, name="output")
        self.dropout = keras.layers.Dropout(dropout)

    def split_heads(self, x):
        """[B, T, D] -> [B, heads, T, D / heads]."""
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.heads, self.head_width))
        return ops.transpose(x, (0, 2, 1, 3))

    def project(self, x):
        """Keys and values of `x` [B, T, D]: each [B, heads, T, D / heads]."""
        return self.split_heads(self.key_dense(x)), self.split_heads(self.value_dense(x))

    def call(self, x, keys, values, mask, training=None):
        """x [B, Q, D] attends to keys and values [B, heads, K, D / heads]; mask broadcasts to
        [B, heads, Q, K] (True: may attend). -> output [B, Q, D], weights [B, heads, Q, K]."""
        queries = self.split_heads(self.query_dense(x)) / math.sqrt(self.head_width)
        scores = ops.einsum("bhqd,bhkd->bhqk", queries, keys)
        weights = ops.softmax(ops.where(mask, scores, NEG_INF), axis=-1)
        mixed = ops.einsum("bhqk,bhkd->bhqd", self.dropout(weights, training=training), values)
        mixed = ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (ops.shape(x)[0], -1, self.width))
        return self.output_dense(mixed), weights


class FeedForward(keras.layers.Layer):
    def __init__(self, width: int, hidden: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden, activation="relu", name="hidden")
        self.out = keras.layers.Dense(width, name="out")
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, x, training=None):
        return self.out(self.dropout(self.hidden(x), training=training))


class TokenEmbedding(keras.layers.Layer):
    """ids [B, T] -> embedding * sqrt(D) + the sine encoding of positions start..start+T-1."""

    def __init__(self, vocab_size: int, width: int, max_length: int, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.embedding = keras.layers.Embedding(vocab_size, width, name="embedding")
        self.positions = sine_positions(max_length, width)
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, ids, start=0, training=None):
        steps = ops.shape(ids)[1]
        positions = ops.take(self.positions, start + ops.arange(steps), axis=0)  # [T, D]
        x = self.embedding(ids) * math.sqrt(self.width) + positions[None]
        return self.dropout(x, training=training)


# Registered: checkpoints (.keras) name the layers by package and class.
@keras.saving.register_keras_serializable(package="transformer")
class TransformerEncoder(keras.layers.Layer):
    """source ids [B, S] -> memory [B, S, D], its mask [B, S] (1 token, 0 padding), and no
    decoder state (the interface of `models.seq2seq.Encoder`)."""

    def __init__(self, vocab_size: int, max_length: int, layers: int = 3, heads: int = 4,
                 width: int = 256, hidden: int = 1024, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.num_layers = vocab_size, max_length, layers
        self.heads, self.width, self.hidden, self.dropout_rate = heads, width, hidden, dropout
        self.embed = TokenEmbedding(vocab_size, width, max_length, dropout, name="embed")
        self.attention_norms = [keras.layers.LayerNormalization(name=f"attention_norm_{i}")
                                for i in range(layers)]
        self.attentions = [MultiHeadAttention(heads, width, dropout, name=f"attention_{i}")
                           for i in range(layers)]
        self.ff_norms = [keras.layers.LayerNormalization(name=f"ff_norm_{i}")
                         for i in range(layers)]
        self.ffs = [FeedForward(width, hidden, dropout, name=f"ff_{i}") for i in range(layers)]
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, source, training=None):
        mask = ops.not_equal(source, PAD)  # [B, S]
        attend = mask[:, None, None, :]  # every position sees every token, no padding
        x = self.embed(source, training=training)
        for norm, attention, ff_norm, ff in zip(self.attention_norms, self.attentions,
                                                self.ff_norms, self.ffs):
            h = norm(x)
            keys, values = attention.project(h)
            h, _ = attention(h, keys, values, attend, training=training)
            x = x + self.dropout(h, training=training)
            x = x + self.dropout(ff(ff_norm(x), training=training), training=training)
        return self.final_norm(x), ops.cast(mask, "float32"), []

    def build(self, input_shape=None):
        self.built = True  # the sub-layers build on the first call

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "max_length": self.max_length, "layers": self.num_layers, "heads": self.heads,
                "width": self.width, "hidden": self.hidden, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="transformer")
class TransformerDecoder(keras.layers.Layer):
    """The decoder, with the interface of `layers.attention.AttentionDecoder`:

        call(target_in [B, T], memory, memory_mask) -> logits [B, T, vocab] (teacher forcing)
        prepare_memory(memory)      -> the memory's keys and values, every layer, once
        start_state(memory, _)      -> [empty cache, position 0] for the beam search
        step(tokens [B], state, memory, keys, memory_mask) -> log_probs [B, vocab], state,
                                       the last layer's cross-attention [B, S] (heads averaged)
    """

    def __init__(self, vocab_size: int, max_length: int, layers: int = 3, heads: int = 4,
                 width: int = 256, hidden: int = 1024, dropout: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length, self.num_layers = vocab_size, max_length, layers
        self.heads, self.width, self.hidden, self.dropout_rate = heads, width, hidden, dropout
        self.embed = TokenEmbedding(vocab_size, width, max_length, dropout, name="embed")
        self.self_norms = [keras.layers.LayerNormalization(name=f"self_norm_{i}")
                           for i in range(layers)]
        self.self_attentions = [MultiHeadAttention(heads, width, dropout, name=f"self_{i}")
                                for i in range(layers)]
        self.cross_norms = [keras.layers.LayerNormalization(name=f"cross_norm_{i}")
                            for i in range(layers)]
        self.cross_attentions = [MultiHeadAttention(heads, width, dropout, name=f"cross_{i}")
                                 for i in range(layers)]
        self.ff_norms = [keras.layers.LayerNormalization(name=f"ff_norm_{i}")
                         for i in range(layers)]
        self.ffs = [FeedForward(width, hidden, dropout, name=f"ff_{i}") for i in range(layers)]
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.output_dense = keras.layers.Dense(vocab_size, name="logits")
        self.dropout = keras.layers.Dropout(dropout)
        self.state_count = 2  # the cache and the position

    def prepare_memory(self, memory):
        """memory [B, S, D] -> keys and values of every layer's cross-attention,
        [B, layers, 2, heads, S, D / heads]."""
        return ops.stack([ops.stack(attention.project(memory), axis=1)
                          for attention in self.cross_attentions], axis=1)

    def start_state(self, memory, encoder_state=None):
        batch = ops.shape(memory)[0]
        cache = ops.zeros((batch, self.num_layers, 2, self.heads, self.max_length,
                           self.width // self.heads), memory.dtype)
        return [cache, ops.zeros((batch,), "int32")]

    def _blocks(self, x, memory_keys, memory_mask, self_attend, self_keys_values, training):
        """The layers on x [B, Q, D]. `self_keys_values(i, h)` gives layer i's self-attention
        keys and values for the normalised input h (the cache's, in `step`)."""
        cross_attend = ops.cast(memory_mask, "bool")[:, None, None, :]
        for i in range(self.num_layers):
            h = self.self_norms[i](x)
            keys, values = self_keys_values(i, h)
            h, _ = self.self_attentions[i](h, keys, values, self_attend, training=training)
            x = x + self.dropout(h, training=training)
            h = self.cross_norms[i](x)
            h, weights = self.cross_attentions[i](h, memory_keys[:, i, 0], memory_keys[:, i, 1],
                                                  cross_attend, training=training)
            x = x + self.dropout(h, training=training)
            x = x + self.dropout(self.ffs[i](self.ff_norms[i](x), training=training),
                                 training=training)
        return self.output_dense(self.final_norm(x)), weights

    def call(self, target_in, memory, memory_mask, initial_state=None, return_attention=False,
             training=None):
        """Teacher forcing: logits [B, T, vocab]; with `return_attention`, also the last
        layer's cross-attention weights per head [B, heads, T, S]."""
        steps = ops.shape(target_in)[1]
        causal = ops.arange(steps)[:, None] >= ops.arange(steps)[None, :]  # [T, T]
        x = self.embed(target_in, training=training)
        logits, weights = self._blocks(
            x, self.prepare_memory(memory), memory_mask, causal[None, None],
            lambda i, h: self.self_attentions[i].project(h), training)
        return (logits, weights) if return_attention else logits

    def step(self, tokens, state, memory, keys, memory_mask):
        """One token per row at the state's position; its keys and values go into the cache."""
        cache, position = state
        at = position[0]  # every row of a search is at the same position
        x = self.embed(tokens[:, None], start=at)  # [B, 1, D]
        visible = ops.arange(self.max_length) <= at  # the prefix and this token
        written = []

        def self_keys_values(i, h):
            new_keys, new_values = self.self_attentions[i].project(h)  # [B, heads, 1, D/h]
            start = (0, 0, at, 0)
            layer_keys = ops.slice_update(cache[:, i, 0], start, new_keys)
            layer_values = ops.slice_update(cache[:, i, 1], start, new_values)
            written.append(ops.stack([layer_keys, layer_values], axis=1))
            return layer_keys, layer_values

        logits, weights = self._blocks(x, keys, memory_mask, visible[None, None, None],
                                       self_keys_values, training=False)
        state = [ops.stack(written, axis=1), position + 1]
        return (ops.log_softmax(logits[:, 0], axis=-1), state,
                ops.mean(weights[:, :, 0], axis=1))

    def build(self, *args, **kwargs):
        self.built = True  # the sub-layers build on the first call

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "max_length": self.max_length, "layers": self.num_layers, "heads": self.heads,
                "width": self.width, "hidden": self.hidden, "dropout": self.dropout_rate}


class RecomputingDecoder:
    """A `TransformerDecoder` decoding without its cache: each step runs the whole prefix through
    every layer again, as a decoder without a cache must. The same tokens as the cached `step`
    (tests/test_transformer.py); the baseline bench/translation.py times the cache against."""

    def __init__(self, decoder: TransformerDecoder):
        self.decoder = decoder
        self.state_count = 2

    def prepare_memory(self, memory):
        return memory  # `call` projects the memory itself, at every step

    def start_state(self, memory, encoder_state=None):
        batch = ops.shape(memory)[0]
        return [ops.zeros((batch, self.decoder.max_length), "int32"), ops.zeros((batch,), "int32")]

    def step(self, tokens, state, memory, keys, memory_mask):
        prefix, position = state  # the tokens so far [B, max_length], the position [B]
        at = position[0]
        prefix = ops.slice_update(prefix, (0, at), tokens[:, None])
        logits, weights = self.decoder(prefix[:, : at + 1], memory, memory_mask,
                                       return_attention=True)
        return (ops.log_softmax(logits[:, -1], axis=-1), [prefix, position + 1],
                ops.mean(weights[:, :, -1], axis=1))
