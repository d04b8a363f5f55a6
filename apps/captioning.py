"""Image captioning: a CNN reads the image into a grid of region features, an LSTM with visual
attention writes the caption, beam search picks it, BLEU-1..4 measures it.

    python -m apps.captioning train                          # generated shape scenes
    python -m apps.captioning train --decoder show-and-tell  # no attention, for comparison
    python -m apps.captioning train --data path/to/Flickr8k  # or .../captions_val2017.json
    python -m apps.captioning evaluate                       # BLEU-1..4, examples, attention.png
    python -m apps.captioning caption photo.png scene.jpg    # one caption per image
    python -m apps.captioning export                         # -> saved_models/captioning/<n>/
    python -m serving.litert_captioning MODEL.tflite scene.png  # numpy + LiteRT, no TensorFlow

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
`--decoder show-and-tell` the decoder is a plain LSTM started from the image vector.

Quality is corpus BLEU-1..4 with sacreBLEU against all references of each held-out image
(multi-reference BLEU: an n-gram counts when any reference has it, clipped by the reference that
has it most often). On the generated scenes the held-out images show combinations of objects never
seen in training (`pipelines.shape_scenes`). Export writes a SavedModel whose `serving_default`
takes encoded image bytes and returns the caption, and `.tflite` files with an `encode` and a
`decode_step` signature (batch 1, builtin ops) whose greedy loop runs in numpy on LiteRT.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from tqdm import tqdm

from apps import runner
from apps.runner import UsageError
from layers.attention import AttentionDecoder
from layers.beam_search import EncoderDecoderSearch
from models.sequence_training import (
    GlobalClipAdam,
    MaskedAccuracy,
    MaskedCrossEntropy,
    in_float32,
)
from pipelines import DataError, shape_scenes
from pipelines import captions as cp
from pipelines import text_pairs as tp
from serving import export as exporting

APP = "captioning"
DEFAULT_DATA = "scenes"
SCENES = shape_scenes.DEFAULT_SIZE
IMAGE_SIZE = shape_scenes.IMAGE_SIZE  # real photos are resized to this too (--image-size)
EPOCHS = 8
BATCH_SIZE = 64  # per replica
LEARNING_RATE = 3e-3  # Adam, cosine decay after a short warm-up
WARMUP_SHARE = 0.05
CLIP_NORM = 1.0
FILTERS = (32, 64, 96)  # the CNN's stages, each halving the grid: 48 -> 24 -> 12 -> 6
BN_MOMENTUM = 0.9  # short schedules: the default 0.99 leaves the moving statistics stale
# Batch statistics of the whole global batch under MirroredStrategy, not of each replica's slice:
# N replicas then train exactly as one device would (one small all-reduce per layer and step).
BN_SYNCHRONIZED = True
EMBEDDING_DIM = 64
UNITS = 192
DECODERS = ("attention", "show-and-tell")
DECODER = "attention"
MAX_TOKENS = 8000
MAX_CAPTION_TOKENS = 30  # longer training captions are cut (real captions run long)
BEAM_WIDTH = 3
ALPHA = 0.0  # a caption's length is fixed by the image; no length penalty
EXAMPLES = 8
SEED = 42
MODEL_BASE = Path("saved_models")
LAST_RUN = runner.RUNS_ROOT / APP / "LAST"


def default_run_dir(data: str = DEFAULT_DATA, decoder: str = DECODER) -> Path:
    name = "scenes" if data == DEFAULT_DATA else Path(data).name.split(".")[0]
    return runner.RUNS_ROOT / APP / f"{name}-{decoder}"


def last_run_dir() -> Path:
    if LAST_RUN.is_file():
        return Path(LAST_RUN.read_text().strip())
    return default_run_dir()


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_data(data: str = DEFAULT_DATA, scenes: int = SCENES, objects: int | None = None
              ) -> cp.CaptionData:
    if data == DEFAULT_DATA:
        splits = shape_scenes.generate(scenes, objects=objects)
        return cp.CaptionData(f"generated shape scenes ({scenes})",
                              *(cp.Split(*splits[s]) for s in ("train", "validation", "test")))
    return cp.load(data)


def caption_pairs(split: cp.Split, every_reference: bool) -> tuple[list[int], list[str]]:
    """(image index, caption) training pairs: every reference, or only the first (the scenes'
    canonical phrasing; the others stay references for BLEU)."""
    pairs = [(i, refs[j]) for i, refs in enumerate(split.references)
             for j in range(len(refs) if every_reference else 1)]
    return [i for i, _ in pairs], [c for _, c in pairs]


def build_tokenizer(captions: list[str], max_tokens: int = MAX_TOKENS) -> tp.Tokenizer:
    standardized = [s.decode() for s in
                    tp.standardize(tf.constant(captions), lowercase=True).numpy().tolist()]
    return tp.Tokenizer(tp.adapt_vocabulary(standardized, "word", max_tokens, special=True),
                        "word", lowercase=True)


def caption_ids(tokenizer: tp.Tokenizer, captions: list[str], length: int) -> np.ndarray:
    """int32 [n, length + 2]: [start] tokens [end], 0-padded, cut to `length` tokens."""
    out = np.zeros([len(captions), length + 2], np.int32)
    for row, ids in enumerate(tokenizer.id_lists(captions)):
        ids = ids[:length]
        out[row, : len(ids) + 2] = [tp.START, *ids, tp.END]
    return out


def batches(images: np.ndarray, index: list[int], ids: np.ndarray, batch_size: int,
            shuffle: bool = False, seed: int = SEED, multiple_of: int = 1) -> tf.data.Dataset:
    """((image uint8 [b, H, W, 3], caption_in [b, T]), caption_out [b, T]), teacher forcing."""
    count = len(index) - len(index) % multiple_of if len(index) >= multiple_of else len(index)
    data = tf.data.Dataset.from_tensor_slices((np.asarray(index[:count], np.int32), ids[:count]))
    if shuffle:  # `train` builds each epoch's pipeline afresh, with its own seed
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=False)
    table = tf.constant(images)
    # `count` and the batch are multiples of the replicas, so every batch splits evenly (Keras
    # 3.15 under MirroredStrategy fails on one that does not).
    data = data.batch(batch_size)
    return data.map(lambda i, c: ((tf.gather(table, i), c[:, :-1]), c[:, 1:]),
                    num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=APP)
class ImageEncoder(layers.Layer):
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
                raise UsageError(f"--encoder {backbone}: not a keras.applications model")
            self.cnn = getattr(keras.applications, backbone)(
                include_top=False, weights=backbone_weights,
                input_shape=(image_size, image_size, 3))
            self.cnn.trainable = False  # a pre-trained backbone stays as it is
        else:
            def norm():
                return layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                 synchronized=BN_SYNCHRONIZED)

            self.cnn = keras.Sequential(
                [layer for f in self.filters for layer in (
                    layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False),
                    norm(), layers.ReLU(),
                    layers.Conv2D(f, 3, padding="same", use_bias=False),
                    norm(), layers.ReLU())],
                name="cnn")
        self.project = layers.Dense(units, activation="relu", name="regions")
        self.bridges = [layers.Dense(units, activation="tanh", name=f"bridge_{i}")
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


@keras.saving.register_keras_serializable(package=APP)
class ShowAndTellDecoder(layers.Layer):
    """Show and Tell's decoder: the image only sets the LSTM's initial state; no attention.
    Same interface as `AttentionDecoder` (memory arguments accepted and ignored; the attention
    weights it returns are uniform), so the captioner and the beam search do not care."""

    def __init__(self, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.rnn = layers.LSTM(units, return_sequences=True, return_state=True, name="lstm")
        self.output_dense = layers.Dense(vocab_size, name="logits")
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
        raise UsageError(f"--decoder {decoder}: choose from {', '.join(DECODERS)}")
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


def compile_model(model: keras.Model, steps: int, learning_rate: float = LEARNING_RATE):
    """Adam with warm-up and cosine decay over `steps`, peaking at `learning_rate`: the rate for
    the global batch (`train` scales the per-replica rate). The loss and the clipping see the
    whole global batch under MirroredStrategy (see `apps.translation`)."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps, 1), warmup_target=learning_rate,
        warmup_steps=max(int(WARMUP_SHARE * steps), 1))
    model.compile(optimizer=GlobalClipAdam(schedule, global_clipnorm=CLIP_NORM),
                  loss=MaskedCrossEntropy(), metrics=[MaskedAccuracy()])
    return model


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


class Captioner(EncoderDecoderSearch):
    """A trained model with its vocabulary: images in, captions out, by compiled beam search."""

    def __init__(self, model: keras.Model, tokenizer: tp.Tokenizer, max_length: int):
        super().__init__(model.get_layer("encoder"), model.get_layer("decoder"), tokenizer.size,
                         forbidden_ids=(tp.PAD, tp.UNK, tp.START), start_id=tp.START,
                         end_id=tp.END)
        self.model, self.tokenizer, self.max_length = model, tokenizer, int(max_length)
        self.image_size = self.encoder.image_size
        self._compiled: dict = {}

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
        images = tf.map_fn(lambda e: cp.decode_image(e, self.image_size), encoded,
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
        caption_in = tf.constant([[tp.START, *output_ids[:-1]]], tf.int32)
        _, weights = self.decoder(caption_in, memory, mask, state, return_attention=True)
        return np.asarray(weights)[0]


# ---------------------------------------------------------------------------------------------
# BLEU and baselines
# ---------------------------------------------------------------------------------------------


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-1..4 (0-100) with sacreBLEU against every reference of each image. sacreBLEU
    takes reference streams of equal length: an image with fewer references repeats its last
    one, which changes nothing (clipping takes the maximum count, the closest length is the
    same)."""
    from sacrebleu.metrics import BLEU

    most = max(len(r) for r in references)
    streams = [[refs[min(k, len(refs) - 1)] for refs in references] for k in range(most)]
    scores = {}
    for n in range(1, 5):
        metric = BLEU(max_ngram_order=n, lowercase=True)
        scores[f"bleu{n}"] = float(metric.corpus_score(hypotheses, streams).score)
    scores["bleu_signature"] = str(metric.get_signature())
    return scores


def most_frequent_caption(split: cp.Split) -> str:
    """The "most frequent caption" baseline: the training caption that occurs most often."""
    counts: dict[str, int] = {}
    for refs in split.references:
        for caption in refs:
            counts[caption] = counts.get(caption, 0) + 1
    return max(sorted(counts), key=counts.get)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(data: str = DEFAULT_DATA, epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
          decoder: str = DECODER, scenes: int = SCENES, objects: int | None = None,
          image_size: int | None = None, units: int = UNITS, embedding_dim: int = EMBEDDING_DIM,
          learning_rate: float = LEARNING_RATE, backbone: str | None = None,
          backbone_weights: str | None = None, strategy_name: str = "auto",
          run_dir: Path | None = None, seed: int = SEED, verbose: int | str = "auto",
          evaluate_after: bool = True, jit: bool = False,
          backup_every: int | None = None) -> dict:
    """Trains on the training split, keeps the epoch with the best validation token accuracy,
    reports BLEU-1..4 on the held-out split. `objects` fixes the scenes' object count;
    `learning_rate` is the peak rate for one replica's batch (scaled with the replicas). A
    re-run of a killed run resumes exactly from its newest backup (`runner.fit`)."""
    if backbone_weights and not Path(backbone_weights).is_file():
        raise DataError(f"{backbone_weights}: no such weights file (--encoder-weights)")
    keras.utils.set_random_seed(seed)
    dataset = load_data(data, scenes, objects)
    if not len(dataset.train) or not len(dataset.validation) or not len(dataset.test):
        raise DataError(f"{dataset.name}: a split is empty (train {len(dataset.train)},"
                        f" validation {len(dataset.validation)}, test {len(dataset.test)})")
    image_size = image_size or IMAGE_SIZE
    every = data != DEFAULT_DATA
    train_index, train_captions = caption_pairs(dataset.train, every)
    val_index, val_captions = caption_pairs(dataset.validation, every)
    tokenizer = build_tokenizer(train_captions)
    length = min(MAX_CAPTION_TOKENS, max(len(i) for i in tokenizer.id_lists(train_captions)))
    train_images = cp.image_array(dataset.train.images, image_size)
    val_images = cp.image_array(dataset.validation.images, image_size)

    strategy = runner.choose_strategy(strategy_name)
    run_dir = runner.worker_run_dir(Path(run_dir or default_run_dir(data, decoder)), strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * replicas
    train_ids = caption_ids(tokenizer, train_captions, length)

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return batches(train_images, train_index, train_ids, global_batch, shuffle=True,
                       seed=seed + epoch, multiple_of=replicas)

    steps_per_epoch = int(epoch_batches(0).cardinality())
    resumed = runner.start_run(run_dir)
    tp.write_vocabulary(run_dir / "vocab.txt", tokenizer.vocabulary)
    run = {"app": APP, "data": data, "scenes": scenes, "objects": objects,
           "dataset": dataset.name, "image_size": image_size, "max_length": length + 1,
           "model": {"decoder": decoder, "units": units, "embedding_dim": embedding_dim,
                     "backbone": backbone},
           "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
           "seed": seed, "replicas": replicas, "train_images": len(dataset.train),
           "train_captions": len(train_index),
           "global_learning_rate": runner.scaled_learning_rate(learning_rate, strategy)}
    runner.write_json(run_dir / "run.json", run)
    with strategy.scope():
        model = build_model(tokenizer.size, decoder, image_size, embedding_dim, units,
                            backbone=backbone, backbone_weights=backbone_weights)
        compile_model(model, epochs * steps_per_epoch,
                      runner.scaled_learning_rate(learning_rate, strategy))
    started = time.perf_counter()
    steps = runner.fit(
        model, epoch_batches, epochs, run_dir, steps_per_epoch=steps_per_epoch,
        validation_data=batches(val_images, val_index,
                                caption_ids(tokenizer, val_captions, length), global_batch,
                                multiple_of=replicas),
        callbacks=runner.training_callbacks(run_dir, monitor="val_masked_accuracy",
                                            resumed=resumed is not None),
        backup_every=backup_every, jit=jit, verbose=verbose)
    seconds = time.perf_counter() - started
    runner.plot_history(run_dir)
    if runner.is_chief(strategy):  # another worker's run directory is scratch
        LAST_RUN.parent.mkdir(parents=True, exist_ok=True)
        LAST_RUN.write_text(f"{run_dir.resolve()}\n")
    metrics = {"training_seconds": round(seconds, 1), "epochs": epochs, "steps": steps,
               "train_images": len(dataset.train)}
    if evaluate_after:
        metrics.update(held_out_metrics(load_captioner(run_dir), dataset, run_dir))
        print(f"{APP} ({decoder}) on {dataset.name}: held-out BLEU-1..4 "
              + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
              + f" ({metrics['test_images']} images), run directory {run_dir}")
    runner.write_json(run_dir / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_captioner(run_dir: Path) -> Captioner:
    checkpoint = Path(run_dir) / "best.keras"
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir}: no trained model (best.keras); run `train` first")
    run = json.loads((Path(run_dir) / "run.json").read_text())
    model = in_float32(keras.saving.load_model(checkpoint, compile=False))
    tokenizer = tp.Tokenizer(tp.read_vocabulary(Path(run_dir) / "vocab.txt"), "word", True)
    return Captioner(model, tokenizer, run["max_length"])


def held_out_metrics(captioner: Captioner, dataset: cp.CaptionData, run_dir: Path,
                     beam_width: int = BEAM_WIDTH, alpha: float = ALPHA) -> dict:
    """BLEU-1..4 of the beam-search captions of the test split, with the untrained-copy and
    most-frequent-caption baselines; evaluation.json, examples and attention.png."""
    images = cp.image_array(dataset.test.images, captioner.image_size)
    references = dataset.test.references
    hypotheses = captioner.captions(images, beam_width, alpha)
    frequent = most_frequent_caption(dataset.train)
    metrics = {**bleu_scores(hypotheses, references), "test_images": len(references),
               "beam_width": beam_width,
               "exact_match": float(np.mean([h in r for h, r in zip(hypotheses, references)])),
               "most_frequent_caption": frequent,
               "most_frequent_bleu4": bleu_scores([frequent] * len(references),
                                                  references)["bleu4"],
               "examples": [{"references": r, "caption": h} for r, h in
                            list(zip(references, hypotheses))[:EXAMPLES]]}
    plot_attention(captioner, images[0], run_dir / "attention.png")
    runner.write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def plot_attention(captioner: Captioner, image: np.ndarray, path: Path) -> Path:
    """The image once per word, with the attention over its regions laid on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = captioner.best_ids(image[None])[0]
    weights = captioner.attention(image, ids)  # [words, regions]
    words = [t.decode() or "[end]" for t in captioner.tokenizer.tokens(tf.constant(ids)).numpy()]
    grid = int(round(np.sqrt(weights.shape[1])))
    columns = min(len(words), 6)
    rows = -(-len(words) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, word, w in zip(axes.flat, words, weights):
        axis.imshow(image)
        axis.imshow(w.reshape(grid, grid), cmap="magma", alpha=0.55, interpolation="bilinear",
                    extent=(0, image.shape[1], image.shape[0], 0))
        axis.set_title(word)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def evaluate(run_dir: Path | None = None, beam_width: int = BEAM_WIDTH,
             alpha: float = ALPHA) -> dict:
    run_dir = Path(run_dir or last_run_dir())
    captioner = load_captioner(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    dataset = load_data(run["data"], run["scenes"], run["objects"])
    metrics = held_out_metrics(captioner, dataset, run_dir, beam_width, alpha)
    runner.print_table([{"caption": e["caption"], "first reference": e["references"][0]}
                        for e in metrics["examples"]])
    print("\nBLEU-1..4 " + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
          + f" on {metrics['test_images']} held-out images of {dataset.name} (beam {beam_width});"
          f" most frequent caption BLEU-4 {metrics['most_frequent_bleu4']:.1f}\n"
          f"{metrics['bleu_signature']}\nattention.png and evaluation.json in {run_dir}")
    return metrics


# ---------------------------------------------------------------------------------------------
# caption
# ---------------------------------------------------------------------------------------------


def read_images(paths: list[Path], size: int) -> np.ndarray:
    """Image files -> uint8 [n, size, size, 3]; DataError names a missing or unreadable one."""
    cp.check_images([str(p) for p in paths], Path("caption"))
    return cp.image_array([str(p) for p in paths], size)


def caption(paths: list[Path], run_dir: Path | None = None, beam_width: int = BEAM_WIDTH,
            alpha: float = ALPHA) -> list[str]:
    captioner = load_captioner(Path(run_dir or last_run_dir()))
    return captioner.captions(read_images(paths, captioner.image_size), beam_width, alpha)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


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


TFLITE_SIGNATURES = ("encode", "decode_step")
# No full-int8 variant: as for the translator, TF 2.21's converter is not reliable calibrating a
# two-signature RNN model; "dynamic" (int8 weights, float activations) is the small one.
LITE_VARIANTS = ("float32", "float16", "dynamic")
LITE_CHECK_IMAGES = 20  # held-out images decoded by LiteRT and Keras, token for token


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


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False,
           check_images: int = LITE_CHECK_IMAGES) -> dict:
    """Publishes a run as the next version under `model_base/captioning/`: the SavedModel, and
    in assets.extra/ the .tflite variants, vocab.txt and litert.json, each .tflite checked in the
    LiteRT interpreter against the Keras greedy decode of held-out images."""
    import shutil

    from serving.litert_captioning import CaptionLiteRT

    run_dir = Path(run_dir or last_run_dir())
    captioner = load_captioner(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    test = load_data(run["data"], run["scenes"], run["objects"]).test
    images = cp.image_array(test.images[:check_images], captioner.image_size)
    keras_greedy = [list(ids) for ids in captioner.best_ids(images, beam_width=1, alpha=0.0)]
    report: dict = {"checked_images": len(images)}

    def write(version_dir: Path) -> None:
        serving_archive(captioner).write_out(str(version_dir), verbose=False)
        extra = version_dir / exporting.EXTRA_DIR
        extra.mkdir()
        shutil.copy(run_dir / "vocab.txt", extra / "vocab.txt")
        runner.write_json(extra / "litert.json", {
            "kind": "captioning", "signatures": list(TFLITE_SIGNATURES),
            "image_size": captioner.image_size, "max_length": captioner.max_length,
            "ids": {"pad": tp.PAD, "unk": tp.UNK, "start": tp.START, "end": tp.END},
            "vocab": "vocab.txt"})
        with tempfile.TemporaryDirectory() as lite_dir:
            lite_archive(captioner).write_out(lite_dir, verbose=False)
            for variant in tqdm(LITE_VARIANTS, desc="TFLite", disable=quiet):
                content = exporting.convert_to_tflite(Path(lite_dir), TFLITE_SIGNATURES,
                                                      variant)
                path = extra / f"{APP}_{variant}.tflite"
                path.write_bytes(content)
                lite = CaptionLiteRT(path)
                same = [lite.greedy_ids(image)[0] == [int(t) for t in ids]
                        for image, ids in zip(images, keras_greedy)]
                report[variant] = {"file": path.name, "bytes": len(content),
                                   "same_tokens_as_keras_greedy": float(np.mean(same))}
        runner.write_json(extra / "tflite_report.json", report)

    version_dir = exporting.publish(Path(model_base) / APP, write)
    report["saved_model"] = str(version_dir)
    if not quiet:
        runner.print_table([
            {"format": f"TFLite {v}", "file": report[v]["file"],
             "size (KiB)": f"{report[v]['bytes'] / 1024:.1f}",
             "greedy tokens = Keras": f"{report[v]['same_tokens_as_keras_greedy']:.0%}"}
            for v in LITE_VARIANTS])
        print(f"\nSavedModel (serving_default: image bytes -> caption) and .tflite files in"
              f" {version_dir}")
    return report


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


DEMO_SCENES, DEMO_EPOCHS = 4000, 6


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the attention captioner on generated scenes, evaluated, exported."""
    metrics = train(scenes=DEMO_SCENES, epochs=DEMO_EPOCHS, verbose=2)
    report = export(model_base=model_base, quiet=True)
    return {"app": "captioning (CNN + attention LSTM, shape scenes)",
            "quality": f"BLEU-4 {metrics['bleu4']:.1f} ({metrics['test_images']} held-out"
                       " images of unseen combinations)",
            "SavedModel": report["saved_model"],
            ".tflite KiB f32/f16/dyn/int8": "/".join(
                f"{report[v]['bytes'] / 1024:.0f}" for v in LITE_VARIANTS) + "/n.a."}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.captioning",
        description="Image captioning: CNN regions + LSTM with attention, beam search,"
                    " BLEU-1..4; exports an image-bytes-to-caption SavedModel.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_dir(sub):
        sub.add_argument("--run-dir", type=Path, help="run directory (default: the last one)")
        return sub

    def with_search(sub):
        sub.add_argument("--beam-width", type=int, default=BEAM_WIDTH,
                         help="1 is greedy decoding (default: %(default)s)")
        sub.add_argument("--alpha", type=float, default=ALPHA,
                         help="GNMT length penalty exponent (default: %(default)s)")
        return sub

    train_parser = with_run_dir(commands.add_parser("train", help="train a captioner"))
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="scenes (generated shape scenes, default), a Flickr8k folder or a COCO"
             " captions_*.json")
    train_parser.add_argument("--decoder", choices=DECODERS, default=DECODER,
                              help="default: %(default)s")
    train_parser.add_argument("--encoder", default=None, metavar="NAME",
                              help="a keras.applications backbone (e.g. MobileNetV2) instead of"
                                   " the small CNN trained from scratch")
    train_parser.add_argument("--encoder-weights", default=None, metavar="PATH",
                              help="local weights file for --encoder (nothing is downloaded)")
    train_parser.add_argument("--scenes", type=int, default=SCENES,
                              help="generated scenes (default: %(default)s)")
    train_parser.add_argument("--objects", type=int, choices=(1, 2, 3),
                              help="objects per generated scene (default: 1 to 3)")
    train_parser.add_argument("--image-size", type=int, default=IMAGE_SIZE,
                              help="images are resized to this square (default: %(default)s)")
    train_parser.add_argument("--units", type=int, default=UNITS, help="default: %(default)s")
    train_parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                              help="peak Adam learning rate for one replica's batch; N"
                                   " replicas train at N times it (default: %(default)s)")
    train_parser.add_argument("--seed", type=int, default=SEED)
    train_parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    runner.add_training_options(train_parser, EPOCHS, BATCH_SIZE)

    with_search(with_run_dir(commands.add_parser(
        "evaluate", help="BLEU-1..4 on held-out images, examples, attention.png")))
    caption_parser = with_search(with_run_dir(commands.add_parser(
        "caption", help="one caption per image file")))
    caption_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    export_parser = with_run_dir(commands.add_parser("export", help="SavedModel version"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(args.data, args.epochs, args.batch_size, args.decoder, args.scenes, args.objects,
              args.image_size, args.units, learning_rate=args.learning_rate,
              backbone=args.encoder, backbone_weights=args.encoder_weights,
              strategy_name=args.strategy, run_dir=args.run_dir, seed=args.seed,
              verbose=args.verbose, jit=args.jit, backup_every=args.backup_every)
    elif args.command == "evaluate":
        evaluate(args.run_dir, args.beam_width, args.alpha)
    elif args.command == "caption":
        for path, text in zip(args.images, caption(args.images, args.run_dir, args.beam_width,
                                                   args.alpha)):
            print(f"{path}: {text}")
        sys.stdout.flush()
    elif args.command == "export":
        export(args.run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
