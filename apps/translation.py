"""Neural machine translation: an encoder-decoder with attention, beam search, BLEU, served as
strings and run on phones.

    python -m apps.translation train                       # generated en-fr numbers and dates
    python -m apps.translation train --pair de-en --cell lstm --attention bahdanau
    python -m apps.translation train --data ../shared/data/tatoeba-spa-eng/spa-eng.zip --reverse
    python -m apps.translation evaluate                    # sacreBLEU, chrF, attention heat map
    python -m apps.translation translate "ninety-seven" "Wednesday, May 9, 2018"
    python -m apps.translation translate --file sentences.txt
    python -m apps.translation export                      # -> saved_models/translation/<version>/

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
smoothing, Szegedy et al., 2016). Translating is a beam search (`layers.beam_search`) compiled
with the model into one graph; quality is sacreBLEU and chrF on a held-out test split.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from tqdm import tqdm

from apps import runner
from apps.runner import UsageError
from layers.attention import ATTENTIONS, CELLS, AttentionDecoder
from layers.beam_search import EncoderDecoderSearch
from models.sequence_training import (
    GlobalClipAdam,
    MaskedAccuracy,
    MaskedCrossEntropy,
    in_float32,
)
from pipelines import DataError, number_corpus
from pipelines import text_pairs as tp
from serving import export as exporting

APP = "translation"
DEFAULT_DATA = "numbers"  # the generated corpus; else a tab-separated file or zip
CORPUS_SIZE = number_corpus.DEFAULT_SIZE
EPOCHS = 4
BATCH_SIZE = 64  # per replica
LEARNING_RATE = 3e-3  # Adam, with a short warm-up and a cosine decay to zero
WARMUP_SHARE = 0.05
CLIP_NORM = 1.0  # RNN gradients can spike; clipping keeps one bad batch from wrecking the run
EMBEDDING_DIM = 64
UNITS = 128  # per encoder direction; the decoder has twice as many (the memory's width)
NUM_LAYERS = 1
CELL = "gru"
ATTENTION = "luong"
DROPOUT = 0.0
LABEL_SMOOTHING = 0.0
MAX_LENGTH = 40  # tokens; longer training pairs are dropped (test pairs never are)
MAX_TOKENS = 20_000  # per vocabulary
VALIDATION_SIZE = 0.05  # share of the pairs (or a count when >= 1)
TEST_SIZE = 0.05
BEAM_WIDTH = 4
ALPHA = 0.6  # GNMT's length penalty exponent
OUTPUT_MARGIN = 10  # tokens a translation may run past the longest training target
EVALUATE_BATCH = 128
EXAMPLES = 8
SEED = 42
MODEL_BASE = Path("saved_models")
LAST_RUN = runner.RUNS_ROOT / APP / "LAST"  # the run `translate` uses unless told otherwise


def default_run_dir(data: str = DEFAULT_DATA, pair: str = number_corpus.DEFAULT_PAIR) -> Path:
    name = pair if data == DEFAULT_DATA else Path(data).name.split(".")[0]
    return runner.RUNS_ROOT / APP / name


def last_run_dir() -> Path:
    if LAST_RUN.is_file():
        return Path(LAST_RUN.read_text().strip())
    return default_run_dir()


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    name: str
    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]
    splits: tuple[str, str]  # "word" or "character", source and target


def load_corpus(data: str = DEFAULT_DATA, pair: str = number_corpus.DEFAULT_PAIR,
                size: int = CORPUS_SIZE, reverse: bool = False,
                validation_size: float = VALIDATION_SIZE, test_size: float = TEST_SIZE) -> Corpus:
    """The generated number/date corpus for `pair`, or the pairs of a tab-separated file."""
    if data == DEFAULT_DATA:
        source, target = number_corpus.parse_pair(pair)
        pairs = number_corpus.generate(pair, size)
        name = f"generated numbers and dates {pair}"
        splits = (number_corpus.token_split(source), number_corpus.token_split(target))
    else:
        pairs = tp.read_pairs(Path(data), reverse=reverse)
        name = Path(data).name + (" (reversed)" if reverse else "")
        splits = ("word", "word")
    train, validation, test = tp.split_pairs(pairs, validation_size, test_size)
    return Corpus(name, train, validation, test, splits)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=APP)
class Encoder(layers.Layer):
    """Embedding -> stacked bidirectional RNN. Returns the memory [batch, S, 2 * units], its mask
    [batch, S] (1 for tokens, 0 for padding) and the decoder's initial state (a list)."""

    def __init__(self, vocab_size, embedding_dim=EMBEDDING_DIM, units=UNITS, num_layers=1,
                 cell=CELL, dropout=0.0, decoder_units=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.num_layers, self.cell_type, self.dropout_rate = num_layers, cell, dropout
        self.decoder_units = decoder_units or 2 * units
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        rnn = layers.GRU if cell == "gru" else layers.LSTM
        self.rnns = [
            layers.Bidirectional(rnn(units, return_sequences=True, return_state=True),
                                 name=f"bi{cell}_{i}")
            for i in range(num_layers)
        ]
        self.dropout = layers.Dropout(dropout)
        states = 1 if cell == "gru" else 2  # h, or h and c
        self.bridges = [layers.Dense(self.decoder_units, activation="tanh", name=f"bridge_{i}")
                        for i in range(states)]

    def call(self, source, training=None):
        mask = ops.not_equal(source, tp.PAD)
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
        raise UsageError(f"--cell {cell}: choose from {', '.join(CELLS)}")
    if attention not in ATTENTIONS:
        raise UsageError(f"--attention {attention}: choose from {', '.join(ATTENTIONS)}")
    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    encoder = Encoder(source_vocab, embedding_dim, units, num_layers, cell, dropout,
                      name="encoder")
    decoder = AttentionDecoder(target_vocab, embedding_dim, 2 * units, cell, attention, dropout,
                               name="decoder")
    memory, memory_mask, initial_state = encoder(source)
    logits = decoder(target_in, memory, memory_mask, initial_state)
    return keras.Model([source, target_in], logits, name=f"{cell}_{attention}_translator")


def compile_model(model: keras.Model, steps: int, label_smoothing: float = LABEL_SMOOTHING,
                  learning_rate: float = LEARNING_RATE) -> keras.Model:
    """Adam with warm-up and cosine decay over `steps`, peaking at `learning_rate`: the rate
    for the global batch (`train` scales the per-replica rate with the replicas)."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(steps, 1), warmup_target=learning_rate,
        warmup_steps=max(int(WARMUP_SHARE * steps), 1),
    )
    model.compile(
        optimizer=GlobalClipAdam(schedule, global_clipnorm=CLIP_NORM),
        loss=MaskedCrossEntropy(label_smoothing),
        metrics=[MaskedAccuracy()],
        jit_compile=False,  # every bucket has its own shapes: XLA would recompile for each
    )
    return model


# ---------------------------------------------------------------------------------------------
# Decoding: the model as a step function for the beam search
# ---------------------------------------------------------------------------------------------


class Translator(EncoderDecoderSearch):
    """A trained model with its tokenizers: strings in, strings out, by compiled beam search."""

    def __init__(self, model: keras.Model, source: tp.Tokenizer, target: tp.Tokenizer,
                 max_output_length: int):
        # The decoder never predicts padding, an unknown word or a second [start].
        super().__init__(model.get_layer("encoder"), model.get_layer("decoder"), target.size,
                         forbidden_ids=(tp.PAD, tp.UNK, tp.START), start_id=tp.START,
                         end_id=tp.END)
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
        tokens = tf.fill([tf.shape(source_ids)[0]], tp.START)
        done = tf.zeros_like(tokens, dtype=tf.bool)
        output = []
        for _ in range(int(self.output_limit(source_ids))):
            log_probs, state, _ = self.decode_step(tokens, state, memory, keys, mask)
            tokens = tf.where(done, tp.PAD, tf.argmax(log_probs, axis=-1, output_type=tf.int32))
            output.append(tokens.numpy())
            done = done | tf.equal(tokens, tp.END)
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
        empty = tf.reduce_all(tf.equal(source_ids, tp.PAD), axis=1)
        return tf.where(empty, "", self.target.text(found["tokens"][:, 0]))

    def translate(self, sentences: list[str], beam_width: int = BEAM_WIDTH, alpha: float = ALPHA,
                  batch_size: int = EVALUATE_BATCH, progress: bool = False) -> list[str]:
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
        target_in = tf.constant([[tp.START, *output_ids[:-1]]], tf.int32)
        _, weights = self.decoder(target_in, memory, mask, state, return_attention=True)
        return weights.numpy()[0]


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(
    data: str = DEFAULT_DATA,
    pair: str = number_corpus.DEFAULT_PAIR,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    cell: str = CELL,
    num_layers: int = NUM_LAYERS,
    units: int = UNITS,
    embedding_dim: int = EMBEDDING_DIM,
    attention: str = ATTENTION,
    dropout: float = DROPOUT,
    label_smoothing: float = LABEL_SMOOTHING,
    learning_rate: float = LEARNING_RATE,
    lowercase: bool = False,
    reverse: bool = False,
    size: int = CORPUS_SIZE,
    max_length: int = MAX_LENGTH,
    max_tokens: int | tuple[int, int] = MAX_TOKENS,
    validation_size: float = VALIDATION_SIZE,
    test_size: float = TEST_SIZE,
    train_limit: int | None = None,
    strategy_name: str = "auto",
    run_dir: Path | None = None,
    seed: int = SEED,
    verbose: int | str = "auto",
    evaluate_after: bool = True,
    jit: bool = False,
    backup_every: int | None = None,
) -> dict:
    """Trains on the training split, keeps the epoch with the best validation token accuracy,
    reports sacreBLEU on the test split. `train_limit` trains on the first N training pairs;
    `max_tokens` is one vocabulary size for both languages or (source, target);
    `learning_rate` is the peak rate for one replica's batch (scaled with the replicas).
    A re-run of a killed run resumes exactly from its newest backup (`runner.fit`)."""
    keras.utils.set_random_seed(seed)
    corpus = load_corpus(data, pair, size, reverse, validation_size, test_size)
    train_pairs = corpus.train[:train_limit] if train_limit else corpus.train
    if isinstance(max_tokens, int):
        max_tokens = (max_tokens, max_tokens)
    # The output layer's cost grows with the target vocabulary: often worth a smaller one.
    source, target = tp.build_tokenizers(train_pairs, tuple(max_tokens), corpus.splits,
                                         lowercase)
    train_ids = tp.encode_pairs(train_pairs, source, target, max_length)
    validation_ids = tp.encode_pairs(corpus.validation, source, target, max_length)
    if not train_ids[0] or not validation_ids[0]:
        raise DataError(f"{corpus.name}: no training or validation pair is at most {max_length}"
                        " tokens long (--max-length)")
    strategy = runner.choose_strategy(strategy_name)
    run_dir = runner.worker_run_dir(Path(run_dir or default_run_dir(data, pair)), strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * replicas

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return tp.batches(*train_ids, global_batch, shuffle=True, seed=seed + epoch,
                          multiple_of=replicas)

    # Every length bucket ends in a partial batch: more batches than pairs / global batch.
    steps_per_epoch = int(epoch_batches(0).cardinality())
    longest_target = max(len(t) for t in train_ids[1]) - 1  # tokens after [start], [end] included

    resumed = runner.start_run(run_dir)
    tp.write_vocabulary(run_dir / "source_vocab.txt", source.vocabulary)
    tp.write_vocabulary(run_dir / "target_vocab.txt", target.vocabulary)
    run = {"app": APP, "data": data, "pair": pair, "size": size, "reverse": reverse,
           "corpus": corpus.name, "splits": list(corpus.splits), "lowercase": lowercase,
           "validation_size": validation_size, "test_size": test_size,
           "train_pairs": len(train_ids[0]), "max_length": max_length,
           "max_output_length": longest_target + OUTPUT_MARGIN,
           "model": {"embedding_dim": embedding_dim, "units": units, "num_layers": num_layers,
                     "cell": cell, "attention": attention, "dropout": dropout},
           "epochs": epochs, "batch_size": batch_size, "label_smoothing": label_smoothing,
           "learning_rate": learning_rate, "seed": seed,
           "replicas": strategy.num_replicas_in_sync, "global_batch_size": global_batch,
           "global_learning_rate": runner.scaled_learning_rate(learning_rate, strategy)}
    runner.write_json(run_dir / "run.json", run)
    with strategy.scope():
        model = build_model(source.size, target.size, **run["model"])
        compile_model(model, epochs * steps_per_epoch, label_smoothing,
                      runner.scaled_learning_rate(learning_rate, strategy))
    started = time.perf_counter()
    steps = runner.fit(
        model, epoch_batches, epochs, run_dir, steps_per_epoch=steps_per_epoch,
        validation_data=tp.batches(*validation_ids, global_batch, multiple_of=replicas),
        callbacks=runner.training_callbacks(run_dir, monitor="val_masked_accuracy",
                                            resumed=resumed is not None),
        backup_every=backup_every, jit=jit, verbose=verbose,
    )
    training_seconds = time.perf_counter() - started
    runner.plot_history(run_dir)
    if runner.is_chief(strategy):  # another worker's run directory is scratch
        LAST_RUN.parent.mkdir(parents=True, exist_ok=True)
        LAST_RUN.write_text(f"{run_dir.resolve()}\n")
    metrics = {"training_seconds": round(training_seconds, 1), "epochs": epochs,
               "steps": steps, "train_pairs": len(train_ids[0])}
    if evaluate_after:
        metrics.update(held_out_metrics(load_translator(run_dir), corpus, run_dir))
        print(f"{APP} on {corpus.name}: test sacreBLEU {metrics['bleu']:.1f}, chrF"
              f" {metrics['chrf']:.1f} ({metrics['test_pairs']} held-out pairs, beam"
              f" {metrics['beam_width']}), run directory {run_dir}")
    runner.write_json(run_dir / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> tuple[keras.Model, dict]:
    checkpoint = run_dir / "best.keras"
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir}: no trained model (best.keras); run `train` first")
    return (in_float32(keras.saving.load_model(checkpoint, compile=False)),
            json.loads((run_dir / "run.json").read_text()))


def load_translator(run_dir: Path) -> Translator:
    model, run = load_run(run_dir)
    source = tp.Tokenizer(tp.read_vocabulary(run_dir / "source_vocab.txt"), run["splits"][0],
                          run["lowercase"])
    target = tp.Tokenizer(tp.read_vocabulary(run_dir / "target_vocab.txt"), run["splits"][1],
                          run["lowercase"])
    return Translator(model, source, target, run["max_output_length"])


def corpus_of_run(run: dict) -> Corpus:
    return load_corpus(run["data"], run["pair"], run["size"], run["reverse"],
                       run["validation_size"], run["test_size"])


def bleu_and_chrf(hypotheses: list[str], references: list[str], lowercase: bool) -> dict:
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=lowercase)
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score), "bleu_signature": str(bleu)}


def held_out_metrics(translator: Translator, corpus: Corpus, run_dir: Path,
                     beam_width: int = BEAM_WIDTH, alpha: float = ALPHA,
                     limit: int | None = None, progress: bool = False) -> dict:
    """sacreBLEU and chrF of the beam-search translations of the test split; evaluation.json,
    examples and the attention heat map of the first test sentence."""
    test = corpus.test[:limit] if limit else corpus.test
    sources = [s for s, _ in test]
    references = [t for _, t in test]
    hypotheses = translator.translate(sources, beam_width, alpha, progress=progress)
    metrics = {
        **bleu_and_chrf(hypotheses, references, translator.source.lowercase),
        "test_pairs": len(test), "beam_width": beam_width, "alpha": alpha,
        "exact_match": float(np.mean([h == r for h, r in zip(hypotheses, references)])),
        "examples": [{"source": s, "reference": r, "translation": h}
                     for s, r, h in list(zip(sources, references, hypotheses))[:EXAMPLES]],
    }
    plot_attention(translator, sources[0], run_dir / "attention.png")
    runner.write_json(run_dir / "evaluation.json", metrics)
    return metrics


def plot_attention(translator: Translator, sentence: str, path: Path) -> Path:
    """Heat map of where the decoder looked while writing the translation of `sentence`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = translator.best_ids([sentence])
    output_ids = best["tokens"][0][: best["lengths"][0]]
    weights = translator.attention(sentence, output_ids)  # [outputs, source tokens]
    source_tokens = [t.decode() for t in translator.source.tokens(
        translator.source.ids(tf.constant([sentence]))).to_list()[0]]
    output_tokens = [t.decode() or "[end]" for t in translator.target.tokens(
        tf.constant(output_ids)).numpy()]
    figure, axis = plt.subplots(figsize=(0.45 * len(source_tokens) + 2.5,
                                         0.35 * len(output_tokens) + 2))
    axis.imshow(weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    axis.set_xticks(range(len(source_tokens)), [t if t != " " else "␣" for t in source_tokens],
                    rotation=60, ha="right")
    axis.set_yticks(range(len(output_tokens)), [t if t != " " else "␣" for t in output_tokens])
    axis.set(xlabel="source", ylabel="translation", title="Attention weights")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def evaluate(run_dir: Path | None = None, beam_width: int = BEAM_WIDTH,
             alpha: float = ALPHA) -> dict:
    """`evaluate`: sacreBLEU and chrF on a run's test split, a table of examples."""
    run_dir = Path(run_dir or last_run_dir())
    translator = load_translator(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    corpus = corpus_of_run(run)
    metrics = held_out_metrics(translator, corpus, run_dir, beam_width, alpha, progress=True)
    runner.print_table([{"source": e["source"], "reference": e["reference"],
                         "translation": e["translation"]} for e in metrics["examples"]])
    print(f"\nsacreBLEU {metrics['bleu']:.1f}  chrF {metrics['chrf']:.1f}  exact"
          f" {metrics['exact_match']:.1%}  on {metrics['test_pairs']} held-out pairs of"
          f" {corpus.name} (beam {beam_width}, alpha {alpha})\n{metrics['bleu_signature']}\n"
          f"attention heat map and JSON in {run_dir}")
    return metrics


# ---------------------------------------------------------------------------------------------
# translate
# ---------------------------------------------------------------------------------------------


def read_sentences(path: Path) -> list[str]:
    """One sentence per line of a UTF-8 file; blank lines are kept (they translate to "")."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    sentences = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            sentences.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise DataError(f"{path}:{number}: not UTF-8 text ({error.reason})") from None
    if sentences and sentences[-1] == "":
        sentences.pop()
    if not sentences:
        raise DataError(f"{path}: no sentences (the file is empty)")
    return sentences


def translate(sentences: list[str], run_dir: Path | None = None, beam_width: int = BEAM_WIDTH,
              alpha: float = ALPHA) -> list[str]:
    import unicodedata

    translator = load_translator(Path(run_dir or last_run_dir()))
    sentences = [unicodedata.normalize("NFC", s) for s in sentences]
    return translator.translate(sentences, beam_width, alpha)


# ---------------------------------------------------------------------------------------------
# export: a string-in, string-out SavedModel; encode + decode_step .tflite for phones
# ---------------------------------------------------------------------------------------------

TFLITE_SIGNATURES = ("encode", "decode_step")
# No full-int8 variant: TF 2.21's converter crashes (segmentation fault) while calibrating this
# two-signature RNN model. "dynamic" (int8 weights, float activations) is the small one.
LITE_VARIANTS = ("float32", "float16", "dynamic")
REPRESENTATIVE_SENTENCES = 40  # calibration sentences for the int8 variant


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
    the RNN loops with builtin ops, and the decoding loop runs outside, in numpy."""
    archive = keras.export.ExportArchive()
    archive.track(translator.model)
    decoder = translator.decoder
    memory_width, units = 2 * translator.encoder.units, decoder.units
    states = decoder.state_count

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
        tf.TensorSpec([1], tf.int32, name="token"),
        tf.TensorSpec([1, source_length, memory_width], tf.float32, name="memory"),
        tf.TensorSpec([1, source_length, units], tf.float32, name="keys"),
        tf.TensorSpec([1, source_length], tf.float32, name="source_mask"),
        *[tf.TensorSpec([1, units], tf.float32, name=f"state_{i}") for i in range(states)],
    ])
    return archive


def lite_config(translator: Translator, run: dict, source_length: int) -> dict:
    """litert.json: what `serving.litert_seq2seq` needs to translate without TensorFlow."""
    return {
        "kind": "seq2seq", "signatures": list(TFLITE_SIGNATURES),
        "source_length": source_length, "max_output_length": translator.max_output_length,
        "output_margin": OUTPUT_MARGIN,
        "states": translator.decoder.state_count,
        "ids": {"pad": tp.PAD, "unk": tp.UNK, "start": tp.START, "end": tp.END},
        "source_vocab": "source_vocab.txt", "target_vocab": "target_vocab.txt",
        "source_split": run["splits"][0], "target_split": run["splits"][1],
        "lowercase": run["lowercase"], "standardize": tp.STANDARDIZE_RULES,
    }


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False,
           check_sentences: int = 50) -> dict:
    """Publishes a run as the next version under `model_base/translation/`: the SavedModel, and
    in assets.extra/ the .tflite variants, vocabularies and litert.json, each .tflite checked in
    the LiteRT interpreter against the Keras greedy decode on test sentences."""
    from serving.litert_seq2seq import Seq2SeqLiteRT

    run_dir = Path(run_dir or last_run_dir())
    translator = load_translator(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    source_length = int(run["max_length"])
    corpus = corpus_of_run(run)
    test_sources = [s for s, _ in corpus.test]
    fitting = [s for s, ids in zip(test_sources, translator.source.id_lists(test_sources))
               if len(ids) <= source_length]
    check = fitting[:check_sentences]
    # One sentence at a time, as on the phone: the output limit depends on the source length.
    keras_greedy = [translator.best_ids([sentence], beam_width=1, alpha=0.0) for sentence in check]
    report: dict = {"checked_sentences": len(check), "source_length": source_length}

    def write(version_dir: Path) -> None:
        serving_archive(translator).write_out(str(version_dir), verbose=False)
        extra = version_dir / exporting.EXTRA_DIR
        extra.mkdir()
        shutil.copy(run_dir / "source_vocab.txt", extra / "source_vocab.txt")
        shutil.copy(run_dir / "target_vocab.txt", extra / "target_vocab.txt")
        runner.write_json(extra / "litert.json", lite_config(translator, run, source_length))
        with tempfile.TemporaryDirectory() as lite_dir:
            lite_archive(translator, source_length).write_out(lite_dir, verbose=False)
            for variant in tqdm(LITE_VARIANTS, desc="TFLite", disable=quiet):
                content = exporting.convert_to_tflite(Path(lite_dir), TFLITE_SIGNATURES,
                                                      variant)
                path = extra / f"{APP}_{variant}.tflite"
                path.write_bytes(content)
                lite = Seq2SeqLiteRT(path)
                same = [
                    lite.greedy_ids(lite.source_ids(sentence))
                    == list(greedy["tokens"][0][: greedy["lengths"][0]])
                    for sentence, greedy in zip(check, keras_greedy)
                ]
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
            for v in LITE_VARIANTS
        ])
        print(f"\nSavedModel (serving_default: strings -> translations) and .tflite files in"
              f" {version_dir}; sentences up to {source_length} tokens on LiteRT")
    return report


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


DEMO_SIZE, DEMO_EPOCHS = 12_000, 3  # about a minute of training on 2 cores


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: an en-fr model on the generated corpus, evaluated, exported."""
    metrics = train(size=DEMO_SIZE, epochs=DEMO_EPOCHS, verbose=2)
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "translation (BiGRU + attention, en-fr)",
        "quality": f"sacreBLEU {metrics['bleu']:.1f} ({metrics['test_pairs']} held-out pairs)",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": "/".join(
            f"{report[v]['bytes'] / 1024:.0f}" for v in LITE_VARIANTS) + "/n.a.",
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.translation",
        description="Neural machine translation: encoder-decoder with attention, beam search,"
                    " sacreBLEU; exports a string SavedModel and LiteRT models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_dir(sub, default_help="the last trained run"):
        sub.add_argument("--run-dir", type=Path, help=f"run directory (default: {default_help})")
        return sub

    def with_search(sub):
        sub.add_argument("--beam-width", type=int, default=BEAM_WIDTH,
                         help="1 is greedy decoding (default: %(default)s)")
        sub.add_argument("--alpha", type=float, default=ALPHA,
                         help="GNMT length penalty exponent, >= 0 (default: %(default)s)")
        return sub

    train_parser = with_run_dir(commands.add_parser("train", help="train a model"),
                                "runs/translation/<pair or file name>")
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="numbers (the generated number and date corpus, default) or a tab-separated file"
             " of source<TAB>target lines, plain or zipped (Tatoeba's spa.txt style)")
    train_parser.add_argument("--pair", default=number_corpus.DEFAULT_PAIR,
                              choices=number_corpus.PAIRS,
                              help="language pair of the generated corpus (default: %(default)s)")
    train_parser.add_argument("--reverse", action="store_true",
                              help="translate the file's second column into its first")
    train_parser.add_argument("--cell", choices=CELLS, default=CELL, help="default: %(default)s")
    train_parser.add_argument("--layers", type=int, default=NUM_LAYERS,
                              help="bidirectional encoder layers (default: %(default)s)")
    train_parser.add_argument("--units", type=int, default=UNITS,
                              help="units per encoder direction; the decoder has twice as many"
                                   " (default: %(default)s)")
    train_parser.add_argument("--embedding-dim", type=int, default=EMBEDDING_DIM,
                              help="default: %(default)s")
    train_parser.add_argument("--attention", choices=ATTENTIONS, default=ATTENTION,
                              help="score function (default: %(default)s)")
    train_parser.add_argument("--dropout", type=float, default=DROPOUT,
                              help="default: %(default)s")
    train_parser.add_argument("--label-smoothing", type=float, default=LABEL_SMOOTHING,
                              help="default: %(default)s")
    train_parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                              help="peak Adam learning rate for one replica's batch; N"
                                   " replicas train at N times it (default: %(default)s)")
    train_parser.add_argument("--lowercase", action="store_true",
                              help="lower-case all text (BLEU then ignores case)")
    train_parser.add_argument("--size", type=int, default=CORPUS_SIZE,
                              help="pairs in the generated corpus (default: %(default)s)")
    train_parser.add_argument("--max-length", type=int, default=MAX_LENGTH,
                              help="drop training pairs longer than this many tokens; also the"
                                   " static source length of the .tflite (default: %(default)s)")
    train_parser.add_argument("--max-tokens", type=int, nargs="+", default=[MAX_TOKENS],
                              metavar="N",
                              help="vocabulary size: one for both languages, or source and"
                                   " target (default: %(default)s)")
    train_parser.add_argument("--test-size", type=float, default=TEST_SIZE,
                              help="held-out test pairs: a share below 1, else a count"
                                   " (default: %(default)s)")
    train_parser.add_argument("--seed", type=int, default=SEED)
    train_parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                              help="Keras fit output: 0 silent, 1 progress bar, 2 a line per epoch")
    runner.add_training_options(train_parser, EPOCHS, BATCH_SIZE)

    with_search(with_run_dir(commands.add_parser(
        "evaluate", help="sacreBLEU, chrF, examples and attention heat map on the test split")))

    translate_parser = with_search(with_run_dir(commands.add_parser(
        "translate", help="translate sentences: one translation per line on stdout")))
    translate_parser.add_argument("sentences", nargs="*", metavar="SENTENCE")
    translate_parser.add_argument("--file", type=Path,
                                  help="a UTF-8 file of sentences, one per line")

    export_parser = with_run_dir(commands.add_parser(
        "export", help="SavedModel version (strings in and out) + .tflite files"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(args.data, args.pair, args.epochs, args.batch_size, args.cell, args.layers,
              args.units, args.embedding_dim, args.attention, args.dropout,
              args.label_smoothing, args.learning_rate, args.lowercase, args.reverse, args.size,
              args.max_length, tuple((args.max_tokens * 2)[:2]), test_size=args.test_size,
              strategy_name=args.strategy, run_dir=args.run_dir, seed=args.seed,
              verbose=args.verbose, jit=args.jit, backup_every=args.backup_every)
    elif args.command == "evaluate":
        evaluate(args.run_dir, args.beam_width, args.alpha)
    elif args.command == "translate":
        if bool(args.sentences) == bool(args.file):
            raise UsageError("translate: give sentences or --file FILE (one of the two)")
        sentences = args.sentences or read_sentences(args.file)
        for line in translate(sentences, args.run_dir, args.beam_width, args.alpha):
            print(line)
        sys.stdout.flush()
    elif args.command == "export":
        export(args.run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
