"""Image captioners: a CNN reads the image into a grid of region features, an LSTM writes the
caption, with visual attention over the regions (Show, Attend and Tell) or without it (Show and
Tell), and beam search picks the caption.

Show and Tell (Vinyals et al., 2015, arXiv:1411.4555) feeds a CNN's image vector to an LSTM as
its initial state and lets it write. Show, Attend and Tell (Xu et al., 2015, arXiv:1502.03044)
keeps the CNN's last feature map as a grid of regions instead and lets the decoder attend over
them at every word, so "red" can look at the red thing and "square" at the square:

    image uint8 [batch, 48, 48, 3] -> CNN (3 stride-2 stages) -> [batch, 6, 6, C]
        -> regions (memory) [batch, 36, C]
        -> mean over regions -> dense -> initial LSTM state [h, c]
    caption ids [batch, T] ([start] first) -> AttentionDecoder(memory, [h, c]) -> [batch, T, V]

The decoder is `layers.attention.AttentionDecoder` (Luong-style: the LSTM runs, its output
queries the regions) written for the translator; decoding is `layers.beam_search`. With
`decoder="show-and-tell"` the decoder is a plain LSTM started from the image vector.

`ImageEncoder` can also take a `keras.applications` backbone (frozen, weights from a local file)
in place of the small CNN trained from scratch; its last feature map gives the regions.
`serving_archive` and `lite_archive` are what `apps.captioning export` writes: the SavedModel's
`serving_default` (image bytes in, caption out) and the LiteRT `encode` / `decode_step` pair.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.attention import AttentionDecoder
from layers.beam_search import EncoderDecoderSearch
from models.sequence_training import in_float32
from pipelines import captions as caption_data
from pipelines import text_pairs
from pipelines.shape_scenes import IMAGE_SIZE

FILTERS = (32, 64, 96)  # the CNN's stages, each halving the grid: 48 -> 24 -> 12 -> 6
BN_MOMENTUM = 0.9  # short schedules: the default 0.99 leaves the moving statistics stale
# Batch statistics of the whole global batch under MirroredStrategy, not of each replica's slice:
# N replicas then train exactly as one device would (one small all-reduce per layer and step).
BN_SYNCHRONIZED = True
EMBEDDING_DIM = 64
UNITS = 192
DECODERS = ("attention", "show-and-tell")
DECODER = "attention"
BEAM_WIDTH = 3
ALPHA = 0.0  # a caption's length is fixed by the image; no length penalty
SHEET_WORDS = 7  # attention maps shown per image in attention.png


# Registered under the package it had in apps/captioning.py: saved checkpoints name it.
@keras.saving.register_keras_serializable(package="captioning")
class ImageEncoder(keras.layers.Layer):
    """uint8 image -> (regions [batch, R, C], region mask [batch, R] of ones, [h, c]).

    Default: a small CNN from scratch, stride-2 stages of conv-BN-ReLU; the last feature map's
    cells are the regions. `backbone`: a `keras.applications` name (e.g. "MobileNetV2") built
    without its top and with the weights at `backbone_weights` (a local file: nothing is
    downloaded) or random ones; its last feature map gives the regions."""

    def __init__(self, units=UNITS, filters=FILTERS, image_size=IMAGE_SIZE, backbone=None,
                 backbone_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.filters, self.image_size = units, tuple(filters), image_size
        self.backbone_name, self.backbone_weights = backbone, backbone_weights
        if backbone:
            if not hasattr(keras.applications, backbone):
                raise ValueError(f"backbone {backbone!r}: not a keras.applications model")
            self.cnn = getattr(keras.applications, backbone)(
                include_top=False, weights=backbone_weights,
                input_shape=(image_size, image_size, 3))
            self.cnn.trainable = False  # a pre-trained backbone stays as it is
        else:
            def norm():
                return keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                       synchronized=BN_SYNCHRONIZED)

            self.cnn = keras.Sequential(
                [layer for f in self.filters for layer in (
                    keras.layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False),
                    norm(), keras.layers.ReLU(),
                    keras.layers.Conv2D(f, 3, padding="same", use_bias=False),
                    norm(), keras.layers.ReLU())],
                name="cnn")
        self.project = keras.layers.Dense(units, activation="relu", name="regions")
        self.bridges = [keras.layers.Dense(units, activation="tanh", name=f"bridge_{i}")
                        for i in range(2)]  # LSTM h and c

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        x = x / 127.5 - 1.0  # [-1, 1], what MobileNet-style backbones expect too
        features = self.cnn(x, training=training)  # [batch, g, g, C]
        regions = self.project(ops.reshape(features, (ops.shape(features)[0], -1,
                                                      features.shape[-1])))
        pooled = ops.mean(regions, axis=1)
        mask = ops.ones(ops.shape(regions)[:2], "float32")
        return regions, mask, [bridge(pooled) for bridge in self.bridges]

    def build(self, input_shape=None):
        self.built = True  # the sub-layers build on the first call

    def get_config(self):
        return {**super().get_config(), "units": self.units, "filters": self.filters,
                "image_size": self.image_size, "backbone": self.backbone_name,
                "backbone_weights": None}  # the weights are in the checkpoint


# Registered under the package it had in apps/captioning.py: saved checkpoints name it.
@keras.saving.register_keras_serializable(package="captioning")
class ShowAndTellDecoder(keras.layers.Layer):
    """Show and Tell's decoder: the image only sets the LSTM's initial state; no attention.
    Same interface as `AttentionDecoder` (memory arguments accepted and ignored; the attention
    weights it returns are uniform), so the captioner and the beam search do not care."""

    def __init__(self, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.rnn = keras.layers.LSTM(units, return_sequences=True, return_state=True,
                                     name="lstm")
        self.output_dense = keras.layers.Dense(vocab_size, name="logits")
        self.state_count = 2

    def prepare_memory(self, memory):
        return memory

    def _uniform(self, memory_mask, steps):
        weights = memory_mask / ops.sum(memory_mask, axis=-1, keepdims=True)
        return ops.repeat(weights[:, None, :], steps, axis=1)

    def call(self, tokens, memory, memory_mask, initial_state, return_attention=False,
             training=None):
        outputs = self.rnn(self.embedding(tokens), initial_state=list(initial_state),
                           training=training)[0]
        logits = self.output_dense(outputs)
        if return_attention:
            return logits, self._uniform(memory_mask, ops.shape(tokens)[1])
        return logits

    def step(self, tokens, state, memory, keys, memory_mask):
        output, new_state = self.rnn.cell(self.embedding(tokens), list(state))
        return (ops.log_softmax(self.output_dense(output), axis=-1), list(new_state),
                self._uniform(memory_mask, 1)[:, 0])

    def build(self, *args, **kwargs):
        self.built = True

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim, "units": self.units}


def build_model(vocab_size: int, decoder: str = DECODER, image_size: int = IMAGE_SIZE,
                embedding_dim: int = EMBEDDING_DIM, units: int = UNITS, filters=FILTERS,
                backbone: str | None = None, backbone_weights: str | None = None
                ) -> keras.Model:
    """(image uint8 [batch, S, S, 3], caption_in [batch, T]) -> logits [batch, T, vocab]."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r}: choose from {', '.join(DECODERS)}")
    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    caption_in = keras.Input((None,), dtype="int32", name="caption_in")
    encoder = ImageEncoder(units, filters, image_size, backbone, backbone_weights,
                           name="encoder")
    if decoder == "attention":
        text = AttentionDecoder(vocab_size, embedding_dim, units, cell="lstm",
                                attention="luong", name="decoder")
    else:
        text = ShowAndTellDecoder(vocab_size, embedding_dim, units, name="decoder")
    memory, mask, state = encoder(image)
    return keras.Model([image, caption_in], text(caption_in, memory, mask, state),
                       name=f"{decoder.replace('-', '_')}_captioner")


class Captioner(EncoderDecoderSearch):
    """A trained model with its vocabulary: images in, captions out, by compiled beam search."""

    def __init__(self, model: keras.Model, tokenizer: text_pairs.Tokenizer, max_length: int):
        super().__init__(model.get_layer("encoder"), model.get_layer("decoder"), tokenizer.size,
                         forbidden_ids=(text_pairs.PAD, text_pairs.UNK, text_pairs.START),
                         start_id=text_pairs.START, end_id=text_pairs.END)
        self.model, self.tokenizer, self.max_length = model, tokenizer, int(max_length)
        self.image_size = self.encoder.image_size
        self._compiled: dict = {}

    @classmethod
    def load(cls, model_file: Path, vocab_file: Path, max_length: int) -> "Captioner":
        """A saved model and its vocabulary, decoding in float32."""
        model = in_float32(keras.saving.load_model(model_file, compile=False))
        tokenizer = text_pairs.Tokenizer(text_pairs.read_vocabulary(vocab_file), "word", True)
        return cls(model, tokenizer, max_length)

    def search(self, images, beam_width: int = BEAM_WIDTH, alpha: float = ALPHA):
        """uint8 images [batch, size, size, 3] -> beam_search's dict."""
        return self.decode(images, self.max_length, beam_width, alpha)

    def compiled_search(self, beam_width: int = BEAM_WIDTH, alpha: float = ALPHA):
        key = (int(beam_width), float(alpha))
        if key not in self._compiled:
            self._compiled[key] = tf.function(lambda images: self.search(images, *key),
                                              input_signature=[tf.TensorSpec(
                                                  [None, self.image_size, self.image_size, 3],
                                                  tf.uint8)])
        return self._compiled[key]

    def caption_bytes(self, encoded: tf.Tensor, beam_width=BEAM_WIDTH, alpha=ALPHA) -> dict:
        """Encoded image bytes [batch] -> {"caption": string [batch], "score": float [batch]}:
        what the SavedModel serves."""
        images = tf.map_fn(lambda e: caption_data.decode_image(e, self.image_size), encoded,
                           fn_output_signature=tf.TensorSpec(
                               [self.image_size, self.image_size, 3], tf.uint8))
        found = self.search(images, beam_width, alpha)
        return {"caption": self.tokenizer.text(found["tokens"][:, 0]),
                "score": found["scores"][:, 0]}

    def best_ids(self, images: np.ndarray, beam_width=BEAM_WIDTH, alpha=ALPHA,
                 batch_size: int = 256) -> list[np.ndarray]:
        """The best hypothesis' token ids per image, end token included."""
        search = self.compiled_search(beam_width, alpha)
        out = []
        for start in range(0, len(images), batch_size):
            found = search(tf.constant(images[start : start + batch_size]))
            tokens, lengths = found["tokens"][:, 0].numpy(), found["lengths"][:, 0].numpy()
            out.extend(t[:n] for t, n in zip(tokens, lengths))
        return out

    def captions(self, images: np.ndarray, beam_width=BEAM_WIDTH, alpha=ALPHA) -> list[str]:
        texts = []
        for ids in self.best_ids(images, beam_width, alpha):
            texts.append(self.tokenizer.text(tf.constant(ids[None])).numpy()[0].decode())
        return texts

    def attention(self, image: np.ndarray, output_ids: np.ndarray) -> np.ndarray:
        """Attention weights [words, regions] while writing `output_ids` for one image."""
        memory, _, mask, state = self.encode(image[None])
        caption_in = tf.constant([[text_pairs.START, *output_ids[:-1]]], tf.int32)
        _, weights = self.decoder(caption_in, memory, mask, state, return_attention=True)
        return np.asarray(weights)[0]


def serving_archive(captioner: Captioner, beam_width: int = BEAM_WIDTH,
                    alpha: float = ALPHA) -> keras.export.ExportArchive:
    """`serving_default`: encoded image bytes [batch] -> caption (string) and score; decoding,
    resizing, beam search and detokenisation all run in the graph."""
    archive = keras.export.ExportArchive()
    archive.track(captioner.model)

    def serve(images):
        return captioner.caption_bytes(images, beam_width, alpha)

    archive.add_endpoint("serving_default", serve,
                         input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    return archive


def lite_archive(captioner: Captioner) -> keras.export.ExportArchive:
    """`encode` and `decode_step` with a fixed batch of 1: LiteRT runs the LSTM step with
    builtin ops, and the decoding loop runs outside, in numpy (`serving.litert_captioning`)."""
    archive = keras.export.ExportArchive()
    archive.track(captioner.model)
    size, units = captioner.image_size, captioner.decoder.units
    memory, _, _, _ = captioner.encode(tf.zeros([1, size, size, 3], tf.uint8))
    regions, width = memory.shape[1], memory.shape[2]

    def encode(image):  # uint8 [1, S, S, 3]
        memory, keys, mask, state = captioner.encode(image)
        return {"memory": memory, "keys": keys, "region_mask": mask,
                "state_0": state[0], "state_1": state[1]}

    def decode_step(token, memory, keys, region_mask, state_0, state_1):
        log_probs, state, weights = captioner.decode_step(token, [state_0, state_1], memory,
                                                          keys, region_mask)
        return {"log_probs": log_probs, "attention": weights,
                "state_0": state[0], "state_1": state[1]}

    archive.add_endpoint("encode", encode, input_signature=[
        tf.TensorSpec([1, size, size, 3], tf.uint8, name="image")])
    archive.add_endpoint("decode_step", decode_step, input_signature=[
        tf.TensorSpec([1], tf.int32, name="token"),
        tf.TensorSpec([1, regions, width], tf.float32, name="memory"),
        tf.TensorSpec([1, regions, units], tf.float32, name="keys"),
        tf.TensorSpec([1, regions], tf.float32, name="region_mask"),
        tf.TensorSpec([1, units], tf.float32, name="state_0"),
        tf.TensorSpec([1, units], tf.float32, name="state_1")])
    return archive


def attention_sheet(captioner: Captioner, images: np.ndarray, path: Path,
                    words: int = SHEET_WORDS, beam_width: int = BEAM_WIDTH,
                    alpha: float = ALPHA) -> Path:
    """One row per image: the image with its caption, then where each word looked (the
    attention over the regions laid on the image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = words + 1
    figure, axes = plt.subplots(len(images), columns, figsize=(1.9 * columns,
                                                               2.1 * len(images)),
                                squeeze=False)
    for row, image in zip(axes, images):
        ids = captioner.best_ids(image[None], beam_width, alpha)[0]
        weights = captioner.attention(image, ids)  # [words, regions]
        tokens = [t.decode() or "[end]"
                  for t in captioner.tokenizer.tokens(np.asarray(ids)).numpy()]
        grid = int(round(np.sqrt(weights.shape[1])))
        for axis in row:
            axis.axis("off")
        row[0].imshow(image)
        caption = " ".join(t for t in tokens if t != "[end]")
        row[0].set_title(caption if len(caption) < 60 else caption[:57] + "...", fontsize=8,
                         loc="left")
        for axis, token, w in zip(row[1:], tokens, weights):
            axis.imshow(image)
            axis.imshow(w.reshape(grid, grid), cmap="magma", alpha=0.6,
                        interpolation="bilinear", extent=(0, image.shape[1], image.shape[0], 0))
            axis.set_title(token, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=72)
    plt.close(figure)
    return path
