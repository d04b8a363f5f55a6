"""Neural machine translation: an encoder-decoder with attention, trained by teacher forcing and
decoded by beam search.

The encoder reads the source sentence (Sutskever, Vinyals & Le, 2014, arXiv:1409.3215; Cho et
al., 2014, arXiv:1406.1078): token embeddings go through a stack of bidirectional GRUs or LSTMs,
so each position's vector sees the whole sentence from both sides. Their final states, joined
and passed through a dense layer, start the decoder (the "thought vector"); the per-position
vectors are the memory the decoder attends to at every step (`layers.attention`, Bahdanau et
al., 2015; Luong et al., 2015):

    source ids [batch, S] -> embedding [batch, S, E] -> n x BiRNN -> memory [batch, S, 2U]
                                                                  -> final states -> dense -> s0
    target ids [batch, T] (shifted right, [start] first) -> AttentionDecoder(memory, s0)
                                                          -> logits [batch, T, vocab]

Training is teacher forcing with a cross-entropy that ignores padding (and optional label
smoothing, Szegedy et al., 2016; `models.sequence_training`). Translating is a beam search
(`layers.beam_search`) compiled with the model into one graph: `Translator` is the trained model
as the search's step function, with the tokenizers that turn strings into ids and back.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm import tqdm

from layers.attention import ATTENTIONS, CELLS, AttentionDecoder
from layers.beam_search import EncoderDecoderSearch
from layers.transformer import TransformerDecoder, TransformerEncoder
from models.sequence_training import compile_teacher_forced
from pipelines import text_pairs

EMBEDDING_DIM = 64
UNITS = 128  # per encoder direction; the decoder has twice as many (the memory's width)
NUM_LAYERS = 1
CELL = "gru"
ATTENTION = "luong"
DROPOUT = 0.0
LABEL_SMOOTHING = 0.0
LEARNING_RATE = 3e-3  # Adam, with a short warm-up and a cosine decay to zero
# The Transformer (`--model transformer`): a small base model (Vaswani et al. use 6 layers of
# 512 with 8 heads and 2,048 hidden units), sized for a CPU.
TRANSFORMER_LAYERS = 3  # per stack
HEADS = 4
D_MODEL = 256
FF = 1024
TRANSFORMER_DROPOUT = 0.1
TRANSFORMER_LABEL_SMOOTHING = 0.1
TRANSFORMER_LEARNING_RATE = 1e-3
SOURCE_POSITIONS = 512  # the longest source sentence the encoder's positions reach
BEAM_WIDTH = 4
ALPHA = 0.6  # GNMT's length penalty exponent
OUTPUT_MARGIN = 10  # tokens a translation may run past the longest training target
DECODE_BATCH = 128  # sentences translated together


# ---------------------------------------------------------------------------------------------
# The encoder and the training model
# ---------------------------------------------------------------------------------------------


# Registered under the package it had in apps/translation.py: saved checkpoints name it.
@keras.saving.register_keras_serializable(package="translation")
class Encoder(keras.layers.Layer):
    """Embedding -> stacked bidirectional RNN. Returns the memory [batch, S, 2 * units], its mask
    [batch, S] (1 for tokens, 0 for padding) and the decoder's initial state (a list)."""

    def __init__(self, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS, num_layers=1,
                 cell=CELL, dropout=0.0, decoder_units=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.num_layers, self.cell_type, self.dropout_rate = num_layers, cell, dropout
        self.decoder_units = decoder_units or 2 * units
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        rnn = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
        self.rnns = [
            keras.layers.Bidirectional(rnn(units, return_sequences=True, return_state=True),
                                       name=f"bi{cell}_{i}")
            for i in range(num_layers)
        ]
        self.dropout = keras.layers.Dropout(dropout)
        states = 1 if cell == "gru" else 2  # h, or h and c
        self.bridges = [keras.layers.Dense(self.decoder_units, activation="tanh",
                                           name=f"bridge_{i}")
                        for i in range(states)]

    def call(self, source, training=None):
        mask = ops.not_equal(source, text_pairs.PAD)
        x = self.dropout(self.embedding(source), training=training)
        for rnn in self.rnns:
            outputs = rnn(x, mask=mask, training=training)
            x = self.dropout(outputs[0], training=training)
        final = outputs[1:]  # forward states, then backward states
        half = len(final) // 2
        initial_state = [bridge(ops.concatenate([final[i], final[half + i]], axis=-1))
                         for i, bridge in enumerate(self.bridges)]
        return x, ops.cast(mask, "float32"), initial_state

    def build(self, input_shape=None):
        # The sub-layers build on the first call, which a functional model makes when it is
        # created or loaded; nothing to create before that.
        self.built = True

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim, "units": self.units,
                "num_layers": self.num_layers, "cell": self.cell_type,
                "dropout": self.dropout_rate, "decoder_units": self.decoder_units}


def build_model(source_vocab: int, target_vocab: int, embedding_dim: int = EMBEDDING_DIM,
                units: int = UNITS, num_layers: int = NUM_LAYERS, cell: str = CELL,
                attention: str = ATTENTION, dropout: float = DROPOUT) -> keras.Model:
    """The training model: (source [batch, S], target_in [batch, T]) -> logits [batch, T, V].
    The decoder is twice as wide as one encoder direction, the width of the memory."""
    if cell not in CELLS:
        raise ValueError(f"cell {cell!r}: choose from {', '.join(CELLS)}")
    if attention not in ATTENTIONS:
        raise ValueError(f"attention {attention!r}: choose from {', '.join(ATTENTIONS)}")
    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    encoder = Encoder(source_vocab, embedding_dim, units, num_layers, cell, dropout,
                      name="encoder")
    decoder = AttentionDecoder(target_vocab, embedding_dim, 2 * units, cell, attention, dropout,
                               name="decoder")
    memory, memory_mask, initial_state = encoder(source)
    logits = decoder(target_in, memory, memory_mask, initial_state)
    return keras.Model([source, target_in], logits, name=f"{cell}_{attention}_translator")


def build_transformer(source_vocab: int, target_vocab: int, max_output_length: int,
                      layers: int = TRANSFORMER_LAYERS, heads: int = HEADS, d_model: int = D_MODEL,
                      ff: int = FF, dropout: float = TRANSFORMER_DROPOUT) -> keras.Model:
    """The Transformer with the RNN model's inputs and outputs; the decoder's key/value cache
    holds `max_output_length` positions (the longest translation the search writes)."""
    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    encoder = TransformerEncoder(source_vocab, SOURCE_POSITIONS, layers, heads, d_model, ff,
                                 dropout, name="encoder")
    decoder = TransformerDecoder(target_vocab, max_output_length, layers, heads, d_model, ff,
                                 dropout, name="decoder")
    memory, memory_mask, _ = encoder(source)
    logits = decoder(target_in, memory, memory_mask)
    return keras.Model([source, target_in], logits, name="transformer_translator")


def compile_model(model: keras.Model, steps: int, label_smoothing: float = LABEL_SMOOTHING,
                  learning_rate: float = LEARNING_RATE) -> keras.Model:
    """Adam with warm-up and cosine decay over `steps`, peaking at `learning_rate`: the rate
    for the global batch (the app scales the per-replica rate with the replicas)."""
    # jit_compile off: every bucket has its own shapes, XLA would recompile for each
    return compile_teacher_forced(model, steps, learning_rate, label_smoothing,
                                  jit_compile=False)


# ---------------------------------------------------------------------------------------------
# Decoding: the model as a step function for the beam search
# ---------------------------------------------------------------------------------------------


class Translator(EncoderDecoderSearch):
    """A trained model with its tokenizers: strings in, strings out, by compiled beam search."""

    def __init__(self, model: keras.Model, source: text_pairs.Tokenizer,
                 target: text_pairs.Tokenizer, max_output_length: int):
        # The decoder never predicts padding, an unknown word or a second [start].
        super().__init__(model.get_layer("encoder"), model.get_layer("decoder"), target.size,
                         forbidden_ids=(text_pairs.PAD, text_pairs.UNK, text_pairs.START),
                         start_id=text_pairs.START, end_id=text_pairs.END)
        self.model, self.source, self.target = model, source, target
        self.max_output_length = int(max_output_length)
        self._compiled: dict = {}

    def search(self, source_ids, beam_width: int = BEAM_WIDTH, alpha: float = ALPHA):
        """source ids [batch, S] -> beam_search's dict (tokens [batch, beam, L], scores, ...)."""
        return self.decode(source_ids, self.output_limit(source_ids), beam_width, alpha)

    def compiled_search(self, beam_width: int = BEAM_WIDTH, alpha: float = ALPHA):
        """`search` as one graph (tf.function), one per beam width and alpha."""
        key = (int(beam_width), float(alpha))
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                lambda ids: self.search(ids, *key),
                input_signature=[tf.TensorSpec([None, None], tf.int32)],
            )
        return self._compiled[key]

    def output_limit(self, source_ids) -> tf.Tensor:
        # A translation rarely needs more than twice the source's tokens plus a few.
        return tf.minimum(2 * tf.shape(source_ids)[1] + OUTPUT_MARGIN, self.max_output_length)

    def eager_greedy(self, source_ids) -> np.ndarray:
        """Greedy decoding the way the TensorFlow NMT tutorial does it: a Python loop calling
        the model once per token, eagerly. Same tokens as `search` with beam width 1 (and the
        baseline of bench/translation.py). -> [batch, length], 0 after the end token."""
        memory, keys, mask, state = self.encode(source_ids)
        tokens = tf.fill([tf.shape(source_ids)[0]], text_pairs.START)
        done = tf.zeros_like(tokens, dtype=tf.bool)
        output = []
        for _ in range(int(self.output_limit(source_ids))):
            log_probs, state, _ = self.decode_step(tokens, state, memory, keys, mask)
            tokens = tf.where(done, text_pairs.PAD,
                              tf.argmax(log_probs, axis=-1, output_type=tf.int32))
            output.append(tokens.numpy())
            done = done | tf.equal(tokens, text_pairs.END)
            if bool(tf.reduce_all(done)):
                break
        return np.stack(output, axis=1)

    def source_ids(self, sentences: tf.Tensor) -> tf.Tensor:
        """string [batch] -> padded ids [batch, S]; one padding column more keeps S >= 1."""
        ids = self.source.ids(sentences).to_tensor()
        return tf.pad(ids, [[0, 0], [0, 1]])

    def translate_tensor(self, sentences: tf.Tensor, beam_width=BEAM_WIDTH, alpha=ALPHA):
        """string [batch] -> {"translation": string [batch], "score": float [batch]}."""
        ids = self.source_ids(sentences)
        found = self.search(ids, beam_width, alpha)
        return {"translation": self._texts(ids, found), "score": found["scores"][:, 0]}

    def _texts(self, source_ids, found):
        """The best hypotheses as text; a sentence without a single token translates to ""."""
        empty = tf.reduce_all(tf.equal(source_ids, text_pairs.PAD), axis=1)
        return tf.where(empty, "", self.target.text(found["tokens"][:, 0]))

    def translate(self, sentences: list[str], beam_width: int = BEAM_WIDTH, alpha: float = ALPHA,
                  batch_size: int = DECODE_BATCH, progress: bool = False) -> list[str]:
        """Sentences in, translations out, in batches of similar length (less padding)."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        search = self.compiled_search(beam_width, alpha)
        out = [""] * len(sentences)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="translating", disable=not progress, leave=False):
            chunk = order[start : start + batch_size]
            ids = self.source_ids(tf.constant([sentences[i] for i in chunk]))
            texts = self._texts(ids, search(ids)).numpy()
            for i, text in zip(chunk, texts):
                out[i] = text.decode("utf-8")
        return out

    def best_ids(self, sentences: list[str], beam_width=BEAM_WIDTH, alpha=ALPHA) -> dict:
        """Token ids and scores of the best hypothesis per sentence (numpy)."""
        found = self.compiled_search(beam_width, alpha)(self.source_ids(tf.constant(sentences)))
        return {"tokens": found["tokens"][:, 0].numpy(), "lengths": found["lengths"][:, 0].numpy(),
                "scores": found["scores"][:, 0].numpy(),
                "log_probs": found["log_probs"][:, 0].numpy()}

    def attention(self, sentence: str, output_ids: np.ndarray) -> np.ndarray:
        """Attention weights [output tokens, source tokens] while writing `output_ids`."""
        source_ids = self.source.ids(tf.constant([sentence])).to_tensor()
        memory, _, mask, state = self.encode(source_ids)
        target_in = tf.constant([[text_pairs.START, *output_ids[:-1]]], tf.int32)
        _, weights = self.decoder(target_in, memory, mask, state, return_attention=True)
        return weights.numpy()[0]


# ---------------------------------------------------------------------------------------------
# Export archives: strings in and out for servers, encode + decode_step for phones
# ---------------------------------------------------------------------------------------------

LITE_SIGNATURES = ("encode", "decode_step")


def serving_archive(translator: Translator, beam_width: int = BEAM_WIDTH,
                    alpha: float = ALPHA) -> keras.export.ExportArchive:
    """`serving_default`: a batch of raw strings -> translations (string) and their scores.
    Standardisation, vocabulary lookup, beam search and detokenisation all run in the graph."""
    archive = keras.export.ExportArchive()
    archive.track(translator.model)
    archive.track(translator.source.layer)  # its lookup table

    def serve(sentences):
        return translator.translate_tensor(sentences, beam_width, alpha)

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    return archive


def lite_archive(translator: Translator, source_length: int) -> keras.export.ExportArchive:
    """`encode` and `decode_step` with fixed batch 1 and a static source length: LiteRT runs
    the RNN loops (or the Transformer's blocks) with builtin ops, and the decoding loop runs
    outside, in numpy. The decoder's state is `state_0`, `state_1`...: an RNN's h (and c), a
    Transformer's key/value cache and position."""
    archive = keras.export.ExportArchive()
    archive.track(translator.model)
    # The shapes of what encode returns, from one real call (they differ between models).
    memory, keys, mask, state = translator.encode(tf.zeros([1, source_length], tf.int32))

    def spec(tensor, name):
        return tf.TensorSpec(tensor.shape, tensor.dtype, name=name)

    def encode(source):  # int32 [1, S], 0-padded
        memory, keys, mask, state = translator.encode(source)
        return {"memory": memory, "keys": keys, "source_mask": mask,
                **{f"state_{i}": s for i, s in enumerate(state)}}

    def decode_step(token, memory, keys, source_mask, *state):
        log_probs, state, weights = translator.decode_step(token, list(state), memory, keys,
                                                           source_mask)
        return {"log_probs": log_probs, "attention": weights,
                **{f"state_{i}": s for i, s in enumerate(state)}}

    archive.add_endpoint("encode", encode, input_signature=[
        tf.TensorSpec([1, source_length], tf.int32, name="source")])
    archive.add_endpoint("decode_step", decode_step, input_signature=[
        tf.TensorSpec([1], tf.int32, name="token"), spec(memory, "memory"), spec(keys, "keys"),
        spec(mask, "source_mask"), *[spec(s, f"state_{i}") for i, s in enumerate(state)]])
    return archive


def text_config(splits: list[str], lowercase: bool) -> dict:
    """litert.json's text part: how `serving.litert_seq2seq` turns sentences into ids and back,
    the rules `text_pairs` applies with TensorFlow ops."""
    return {
        "ids": text_pairs.SPECIAL_IDS,
        "source_vocab": "source_vocab.txt", "target_vocab": "target_vocab.txt",
        "source_split": splits[0], "target_split": splits[1],
        "lowercase": lowercase, "standardize": text_pairs.STANDARDIZE_RULES,
    }


def lite_config(translator: Translator, splits: list[str], lowercase: bool,
                source_length: int) -> dict:
    """litert.json: what `serving.litert_seq2seq` needs to translate without TensorFlow."""
    return {
        "kind": "seq2seq", "signatures": list(LITE_SIGNATURES),
        "source_length": source_length, "max_output_length": translator.max_output_length,
        "output_margin": OUTPUT_MARGIN,
        "states": translator.decoder.state_count,
        **text_config(splits, lowercase),
    }


def plot_attention(translator: Translator, sentence: str, path: Path) -> Path:
    """Heat map of where the decoder looked while writing the translation of `sentence`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = translator.best_ids([sentence])
    output_ids = best["tokens"][0][: best["lengths"][0]]
    # [outputs, source tokens]; a Transformer's last layer gives one map per head
    weights = translator.attention(sentence, output_ids)
    maps = weights[None] if weights.ndim == 2 else weights
    source_tokens = [t.decode() for t in translator.source.tokens(
        translator.source.ids(tf.constant([sentence]))).to_list()[0]]
    output_tokens = [t.decode() or "[end]" for t in translator.target.tokens(
        tf.constant(output_ids)).numpy()]
    figure, axes = plt.subplots(1, len(maps), squeeze=False,
                                figsize=(len(maps) * (0.45 * len(source_tokens) + 2.5),
                                         0.35 * len(output_tokens) + 2))
    for head, (axis, heat) in enumerate(zip(axes[0], maps)):
        axis.imshow(heat, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        axis.set_xticks(range(len(source_tokens)),
                        [t if t != " " else "␣" for t in source_tokens], rotation=60, ha="right")
        axis.set_yticks(range(len(output_tokens)),
                        [t if t != " " else "␣" for t in output_tokens])
        axis.set(xlabel="source", ylabel="translation",
                 title="Attention weights" if len(maps) == 1 else f"Cross-attention, head {head}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
