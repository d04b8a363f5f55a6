"""Neural machine translation: an encoder-decoder with attention, beam search, BLEU, served as
strings and run on phones.

    python -m apps.translation train                       # generated en-fr numbers and dates
    python -m apps.translation train --pair de-en --cell lstm --attention bahdanau
    python -m apps.translation train --data ../shared/data/tatoeba-spa-eng/spa-eng.zip --reverse
    python -m apps.translation evaluate                    # sacreBLEU, chrF, attention heat map
    python -m apps.translation translate "ninety-seven" "Wednesday, May 9, 2018"
    python -m apps.translation translate --file sentences.txt
    python -m apps.translation export                      # -> saved_models/translation/<version>/
    python -m bench.skew --apps translation                # served paths against evaluate

The model (a bidirectional RNN encoder, an attention decoder, and the beam search that decodes
with it) is defined in `models/seq2seq.py`. Here: the corpora, the runs, the held-out figures
(sacreBLEU and chrF on a test split), the exports and the skew check (`served_figures`).
"""

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import runner
from apps.runner import UsageError
from layers.attention import ATTENTIONS, CELLS
from models import seq2seq
from models.seq2seq import ALPHA, BEAM_WIDTH, Translator, lite_archive, serving_archive
from models.sequence_training import in_float32
from pipelines import DataError, number_corpus, text_pairs
from serving import export as export_lib

APP = "translation"
DEFAULT_DATA = "numbers"  # the generated corpus; else a tab-separated file or zip
CORPUS_SIZE = number_corpus.DEFAULT_SIZE
EPOCHS = 4
BATCH_SIZE = 64  # per replica
QUICK = {"size": 12_000, "epochs": 3}  # `train --quick`, what `make demo` trains
MAX_LENGTH = 40  # tokens; longer training pairs are dropped (test pairs never are)
MAX_TOKENS = 20_000  # per vocabulary
VALIDATION_SIZE = 0.05  # share of the pairs (or a count when >= 1)
TEST_SIZE = 0.05
EXAMPLES = 8
SEED = 42
# After training, the beam's length penalty is chosen on (at most this many) validation pairs:
# at GNMT's 0.6 the Transformer's Tatoeba translations come out 10% shorter than the references.
LENGTH_PENALTIES = (ALPHA, 1.0, 1.4)
CHOICE_PAIRS = 2000
MODEL_BASE = Path("saved_models")
MODELS = ("rnn", "transformer")
# What --layers, --dropout, --label-smoothing and --learning-rate default to, per model.
MODEL_DEFAULTS = {
    "rnn": {"layers": seq2seq.NUM_LAYERS, "dropout": seq2seq.DROPOUT,
            "label_smoothing": seq2seq.LABEL_SMOOTHING, "learning_rate": seq2seq.LEARNING_RATE},
    "transformer": {"layers": seq2seq.TRANSFORMER_LAYERS, "dropout": seq2seq.TRANSFORMER_DROPOUT,
                    "label_smoothing": seq2seq.TRANSFORMER_LABEL_SMOOTHING,
                    "learning_rate": seq2seq.TRANSFORMER_LEARNING_RATE},
}


@dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. `model` rnn: `cell`, `units`, `embedding_dim`, `attention`;
    transformer: `heads`, `d_model`, `ff`; both: `layers` (the RNN's bidirectional encoder
    layers, the Transformer's per stack) and `dropout`, `label_smoothing`, `learning_rate`
    (None: the model's default, MODEL_DEFAULTS). `max_tokens` is one vocabulary size for both
    languages or (source, target); `learning_rate` is the peak rate for one replica's batch
    (scaled with the replicas); `train_limit` trains on the first N training pairs only."""

    data: str = DEFAULT_DATA
    pair: str = number_corpus.DEFAULT_PAIR
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    seed: int = SEED
    model: str = "rnn"
    cell: str = seq2seq.CELL
    units: int = seq2seq.UNITS
    embedding_dim: int = seq2seq.EMBEDDING_DIM
    attention: str = seq2seq.ATTENTION
    heads: int = seq2seq.HEADS
    d_model: int = seq2seq.D_MODEL
    ff: int = seq2seq.FF
    layers: int | None = None
    dropout: float | None = None
    label_smoothing: float | None = None
    learning_rate: float | None = None
    lowercase: bool = False
    reverse: bool = False
    size: int = CORPUS_SIZE
    max_length: int = MAX_LENGTH
    max_tokens: int | tuple[int, int] = MAX_TOKENS
    validation_size: float = VALIDATION_SIZE
    test_size: float = TEST_SIZE
    train_limit: int | None = None
    evaluate_after: bool = True

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose from {', '.join(MODELS)}")
        if self.model == "transformer" and self.d_model % self.heads:
            raise UsageError(f"--d-model {self.d_model} must be a multiple of --heads"
                             f" {self.heads}")
        for option, default in MODEL_DEFAULTS[self.model].items():
            if getattr(self, option) is None:
                setattr(self, option, default)
        if self.cell not in CELLS:
            raise UsageError(f"--cell {self.cell}: choose from {', '.join(CELLS)}")
        if self.attention not in ATTENTIONS:
            raise UsageError(f"--attention {self.attention}: choose from {', '.join(ATTENTIONS)}")
        sizes = [self.max_tokens] if isinstance(self.max_tokens, int) else list(self.max_tokens)
        if len(sizes) not in (1, 2):
            raise UsageError("--max-tokens: one size for both vocabularies, or source and target")
        self.max_tokens = tuple(sizes * 2)[:2]  # (source, target)


def default_run_dir(data: str = DEFAULT_DATA, pair: str = number_corpus.DEFAULT_PAIR,
                    model: str = "rnn") -> Path:
    name = pair if data == DEFAULT_DATA else Path(data).name.split(".")[0]
    return runner.RUNS_ROOT / APP / (name if model == "rnn" else f"{name}-{model}")


def find_run(run_dir: Path | None = None) -> runner.RunDir:
    """--run-dir, else the run trained last (else the default corpus's directory)."""
    return runner.find_run(APP, run_dir, fallback=default_run_dir())


def model_of_run(run: dict, source_vocab: int, target_vocab: int,
                 max_output_length: int) -> keras.Model:
    """An untrained model of the architecture a run's config (run.json, or `asdict`) names."""
    if run.get("model", "rnn") == "transformer":
        return seq2seq.build_transformer(source_vocab, target_vocab, max_output_length,
                                         run["layers"], run["heads"], run["d_model"], run["ff"],
                                         run["dropout"])
    return seq2seq.build_model(source_vocab, target_vocab, run["embedding_dim"], run["units"],
                               run["layers"], run["cell"], run["attention"], run["dropout"])


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
        pairs = text_pairs.read_pairs(Path(data), reverse=reverse)
        name = Path(data).name + (" (reversed)" if reverse else "")
        splits = ("word", "word")
    train, validation, test = text_pairs.split_pairs(pairs, validation_size, test_size)
    return Corpus(name, train, validation, test, splits)


def corpus_of_run(run: dict) -> Corpus:
    return load_corpus(run["data"], run["pair"], run["size"], run["reverse"],
                       run["validation_size"], run["test_size"])


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None) -> dict:
    """Trains on the training split, keeps the epoch with the best validation token accuracy,
    reports sacreBLEU on the test split. A re-run of a killed run resumes exactly from its
    newest backup (`runner.fit`)."""
    config = config or TrainConfig()
    run = runner.TrainingRun(APP, config, default_run_dir(config.data, config.pair,
                                                          config.model))
    corpus = load_corpus(config.data, config.pair, config.size, config.reverse,
                         config.validation_size, config.test_size)
    train_pairs = corpus.train[: config.train_limit] if config.train_limit else corpus.train
    # The output layer's cost grows with the target vocabulary: often worth a smaller one.
    source, target = text_pairs.build_tokenizers(train_pairs, config.max_tokens, corpus.splits,
                                                 config.lowercase)
    train_ids = text_pairs.encode_pairs(train_pairs, source, target, config.max_length)
    validation_ids = text_pairs.encode_pairs(corpus.validation, source, target,
                                             config.max_length)
    if not train_ids[0] or not validation_ids[0]:
        raise DataError(f"{corpus.name}: no training or validation pair is at most"
                        f" {config.max_length} tokens long (--max-length)")

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return text_pairs.batches(*train_ids, run.global_batch, shuffle=True,
                                  seed=config.seed + epoch, multiple_of=run.replicas)

    # Every length bucket ends in a partial batch: more batches than pairs / global batch.
    steps_per_epoch = int(epoch_batches(0).cardinality())
    longest_target = max(len(t) for t in train_ids[1]) - 1  # tokens after [start], [end] included
    max_output_length = longest_target + seq2seq.OUTPUT_MARGIN
    learning_rate = run.scaled_learning_rate(config.learning_rate)
    run.start(corpus=corpus.name, splits=list(corpus.splits), train_pairs=len(train_ids[0]),
              max_output_length=max_output_length, global_learning_rate=learning_rate)
    text_pairs.write_vocabulary(run.path / "source_vocab.txt", source.vocabulary)
    text_pairs.write_vocabulary(run.path / "target_vocab.txt", target.vocabulary)
    with run.strategy.scope():
        model = model_of_run(dataclasses.asdict(config), source.size, target.size,
                             max_output_length)
        seq2seq.compile_model(model, config.epochs * steps_per_epoch, config.label_smoothing,
                              learning_rate)
    steps = run.fit(model, epoch_batches, steps_per_epoch=steps_per_epoch,
                    validation_data=text_pairs.batches(*validation_ids, run.global_batch,
                                                       multiple_of=run.replicas),
                    monitor="val_masked_accuracy")
    metrics = {"training_seconds": run.training_seconds, "epochs": config.epochs,
               "steps": steps, "train_pairs": len(train_ids[0])}
    translator = load_translator(run.path)
    decoding = choose_length_penalty(translator, corpus.validation[:CHOICE_PAIRS])
    runner.write_json(run.path / "decoding.json", decoding)
    metrics.update(decoding)
    if config.evaluate_after:
        metrics.update(held_out_metrics(translator, corpus, run.path, BEAM_WIDTH,
                                        decoding["alpha"]))
        print(f"{APP} on {corpus.name}: test sacreBLEU {metrics['bleu']:.1f}, chrF"
              f" {metrics['chrf']:.1f} ({metrics['test_pairs']} held-out pairs, beam"
              f" {metrics['beam_width']}, length penalty {metrics['alpha']:g} chosen on"
              f" validation), run directory {run.path}")
    return run.finish(metrics)


def choose_length_penalty(translator: Translator, pairs: list[tuple[str, str]]) -> dict:
    """The GNMT length penalty (at beam BEAM_WIDTH) with the best sacreBLEU on `pairs` (the
    validation split), and every try: what evaluate, translate and export then use."""
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    tries = []
    for alpha in LENGTH_PENALTIES:
        hypotheses = translator.translate(sources, BEAM_WIDTH, alpha)
        tries.append({"alpha": alpha, "val_bleu": round(bleu_and_chrf(
            hypotheses, references, translator.source.lowercase)["bleu"], 2)})
    best = max(tries, key=lambda t: t["val_bleu"])
    return {"beam_width": BEAM_WIDTH, "alpha": best["alpha"], "validation": tries}


def decoding_of(run: runner.RunDir, beam_width: int | None, alpha: float | None
                ) -> tuple[int, float]:
    return runner.chosen_decoding(run.path, beam_width, alpha, (BEAM_WIDTH, ALPHA))


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_translator(run_dir: Path | None = None) -> Translator:
    """A run's best checkpoint with its vocabularies, decoding in float32. Source text is
    NFC-normalised in the graph (`text_pairs.nfc`), as `read_pairs` normalised the training text."""
    run = find_run(run_dir)
    model = in_float32(keras.saving.load_model(run.file("best.keras"), compile=False))
    config = run.config()
    source, target = (
        text_pairs.Tokenizer(text_pairs.read_vocabulary(run.path / f"{side}_vocab.txt"), split,
                             config["lowercase"], normalize=side == "source")
        for side, split in zip(("source", "target"), config["splits"]))
    return Translator(model, source, target, config["max_output_length"])


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
    seq2seq.plot_attention(translator, sources[0], run_dir / "attention.png")
    runner.write_json(run_dir / "evaluation.json", metrics)
    return metrics


def evaluate(run_dir: Path | None = None, beam_width: int | None = None,
             alpha: float | None = None) -> dict:
    """`evaluate`: sacreBLEU and chrF on a run's test split, a table of examples."""
    run = find_run(run_dir)
    beam_width, alpha = decoding_of(run, beam_width, alpha)
    corpus = corpus_of_run(run.config())
    metrics = held_out_metrics(load_translator(run.path), corpus, run.path, beam_width, alpha,
                               progress=True)
    runner.print_table([{"source": e["source"], "reference": e["reference"],
                         "translation": e["translation"]} for e in metrics["examples"]])
    print(f"\nsacreBLEU {metrics['bleu']:.1f}  chrF {metrics['chrf']:.1f}  exact"
          f" {metrics['exact_match']:.1%}  on {metrics['test_pairs']} held-out pairs of"
          f" {corpus.name} (beam {beam_width}, alpha {alpha})\n{metrics['bleu_signature']}\n"
          f"attention heat map and JSON in {run.path}")
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


def translate(sentences: list[str], run_dir: Path | None = None, beam_width: int | None = None,
              alpha: float | None = None) -> list[str]:
    """Translations of raw sentences (the translator NFC-normalises them in its graph)."""
    run = find_run(run_dir)
    return load_translator(run.path).translate(sentences, *decoding_of(run, beam_width, alpha))


# ---------------------------------------------------------------------------------------------
# export: a string-in, string-out SavedModel; encode + decode_step .tflite for phones
# ---------------------------------------------------------------------------------------------

# No full-int8 variant: TF 2.21's converter crashes (segmentation fault) while calibrating this
# two-signature RNN model. "dynamic" (int8 weights, float activations) is the small one.
LITE_VARIANTS = ("float32", "float16", "dynamic")


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False,
           check_sentences: int = 50) -> dict:
    """Publishes a run as the next version under `model_base/translation/`: the SavedModel, and
    in assets.extra/ the .tflite variants, vocabularies and litert.json, each .tflite checked in
    the LiteRT interpreter against the Keras greedy decode on test sentences."""
    from serving.litert_seq2seq import Seq2SeqLiteRT

    run = find_run(run_dir)
    translator = load_translator(run.path)
    config = run.config()
    source_length = int(config["max_length"])
    test_sources = [s for s, _ in corpus_of_run(config).test]
    fitting = [s for s, ids in zip(test_sources, translator.source.id_lists(test_sources))
               if len(ids) <= source_length]
    check_set = fitting[:check_sentences]
    # One sentence at a time, as on the phone: the output limit depends on the source length.
    keras_greedy = [translator.best_ids([sentence], beam_width=1, alpha=0.0)
                    for sentence in check_set]

    def check(path: Path) -> dict:  # litert.json and the vocabularies are already beside it
        lite = Seq2SeqLiteRT(path)
        same = [lite.greedy_ids(lite.source_ids(sentence))
                == list(greedy["tokens"][0][: greedy["lengths"][0]])
                for sentence, greedy in zip(check_set, keras_greedy)]
        return {"same_tokens_as_keras_greedy": float(np.mean(same))}

    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(translator, *decoding_of(run, None, None)),
        assets={"source_vocab.txt": run.file("source_vocab.txt"),
                "target_vocab.txt": run.file("target_vocab.txt"),
                "litert.json": seq2seq.lite_config(translator, config["splits"],
                                                   config["lowercase"], source_length)},
        tflite=export_lib.TFLiteFiles(APP, seq2seq.LITE_SIGNATURES, variants=LITE_VARIANTS,
                                      check=check, archive=lite_archive(translator,
                                                                        source_length)),
        report={"run": str(run.path.resolve()), "checked_sentences": len(check_set),
                "source_length": source_length},
        progress=not quiet,
    )
    if not quiet:
        runner.print_export(report)
        print(f"serving_default: strings -> translations; sentences up to {source_length}"
              " tokens on LiteRT")
    return report


REQUEST_SIZE = 32  # sentences a client sends serving_default at once in `served_figures`


def served_figures(version_dir: Path, run_dir: Path | None = None, examples: int | None = None,
                   unicode_form: str = "NFD") -> list[dict]:
    """The skew check: the test split's source sentences as a client sends them (in
    `unicode_form`: decomposed accents, as macOS and some keyboards write them) through every
    served path, beside `evaluate`'s figures on the same pairs (its beam, and `--beam-width 1`
    for LiteRT's greedy loop): test sacreBLEU and exact-match share, a row each per path."""
    import contextlib
    import io
    import tempfile
    import unicodedata

    from serving.litert_seq2seq import Seq2SeqLiteRT

    run = find_run(run_dir)
    test = corpus_of_run(run.config()).test[:examples]
    sources, references = [s for s, _ in test], [t for _, t in test]
    sent = [unicodedata.normalize(unicode_form, s) for s in sources]
    translator = load_translator(run.path)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    read = {("evaluate (Keras)", "beam"): translator.translate(
                sources, *decoding_of(run, None, None)),
            ("SavedModel serving_default", "beam"): [
                text.decode() for start in range(0, len(sent), REQUEST_SIZE)
                for text in serve(sentences=tf.constant(sent[start:start + REQUEST_SIZE]))[
                    "translation"].numpy()]}
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()) as out:
        Path(folder, "sentences.txt").write_text("".join(f"{s}\n" for s in sent), "utf-8")
        main(["translate", "--run-dir", str(run.path), "--file", f"{folder}/sentences.txt"])
    read["CLI translate --file", "beam"] = out.getvalue().split("\n")[:-1]
    read["evaluate --beam-width 1 (Keras)", "greedy"] = translator.translate(sources, 1)
    for variant in LITE_VARIANTS:
        lite = Seq2SeqLiteRT(Path(version_dir) / export_lib.EXTRA_DIR / f"{APP}_{variant}.tflite")
        read[f"LiteRT {variant}", "greedy"] = [  # no translation past the static length
            lite.translate(s) if len(lite.token_ids(s)) <= lite.length else "" for s in sent]
    rows = []
    for (path, decoding), hypotheses in read.items():
        search = f"beam {BEAM_WIDTH}" if decoding == "beam" else "greedy"
        bleu = bleu_and_chrf(hypotheses, references, translator.source.lowercase)["bleu"]
        exact = float(np.mean([h == r for h, r in zip(hypotheses, references, strict=True)]))
        rows += [{"app": APP, "path": path, "figure": f"test {name} ({search})", "value": value,
                  "examples": len(test)}
                 for name, value in (("sacreBLEU", bleu), ("exact match", exact))]
    return rows


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: an en-fr model on the generated corpus, evaluated, exported."""
    metrics = train(TrainConfig(**QUICK, verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "translation (BiGRU + attention, en-fr)",
        "quality": f"sacreBLEU {metrics['bleu']:.1f} ({metrics['test_pairs']} held-out pairs)",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report),
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
        sub.add_argument("--beam-width", type=int, default=None,
                         help=f"1 is greedy decoding (default: {BEAM_WIDTH})")
        sub.add_argument("--alpha", type=float, default=None,
                         help="GNMT length penalty exponent, >= 0 (default: what training"
                              f" chose on validation, else {ALPHA})")
        return sub

    train_parser = with_run_dir(commands.add_parser("train", help="train a model"),
                                "runs/translation/<pair or file name>[-transformer]")
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="numbers (the generated number and date corpus, default) or a tab-separated file"
             " of source<TAB>target lines, plain or zipped (Tatoeba's spa.txt style)")
    train_parser.add_argument("--pair", default=number_corpus.DEFAULT_PAIR,
                              choices=number_corpus.PAIRS,
                              help="language pair of the generated corpus (default: %(default)s)")
    train_parser.add_argument("--reverse", action="store_true",
                              help="translate the file's second column into its first")
    train_parser.add_argument("--model", choices=MODELS, default="rnn",
                              help="rnn: BiGRU/LSTM encoder, attention decoder; transformer:"
                                   " Vaswani et al.'s, pre-layer-norm (default: %(default)s)")

    def per_model(option):
        rnn, transformer = (MODEL_DEFAULTS[m][option] for m in MODELS)
        return f"default: {rnn} (rnn), {transformer} (transformer)"

    train_parser.add_argument("--layers", type=int,
                              help="rnn: bidirectional encoder layers; transformer: layers per"
                                   f" stack ({per_model('layers')})")
    train_parser.add_argument("--dropout", type=float, help=per_model("dropout"))
    train_parser.add_argument("--label-smoothing", type=float, help=per_model("label_smoothing"))
    train_parser.add_argument("--learning-rate", type=float,
                              help="peak Adam learning rate for one replica's batch; N"
                                   f" replicas train at N times it ({per_model('learning_rate')})")
    rnn_options = train_parser.add_argument_group("rnn")
    rnn_options.add_argument("--cell", choices=CELLS, default=seq2seq.CELL,
                             help="default: %(default)s")
    rnn_options.add_argument("--units", type=int, default=seq2seq.UNITS,
                             help="units per encoder direction; the decoder has twice as many"
                                  " (default: %(default)s)")
    rnn_options.add_argument("--embedding-dim", type=int, default=seq2seq.EMBEDDING_DIM,
                             help="default: %(default)s")
    rnn_options.add_argument("--attention", choices=ATTENTIONS, default=seq2seq.ATTENTION,
                             help="score function (default: %(default)s)")
    transformer_options = train_parser.add_argument_group("transformer")
    transformer_options.add_argument("--heads", type=int, default=seq2seq.HEADS,
                                     help="attention heads (default: %(default)s)")
    transformer_options.add_argument("--d-model", type=int, default=seq2seq.D_MODEL,
                                     help="width of every layer (default: %(default)s)")
    transformer_options.add_argument("--ff", type=int, default=seq2seq.FF,
                                     help="hidden units of the feed-forward layers"
                                          " (default: %(default)s)")
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
    runner.add_training_options(train_parser, EPOCHS, BATCH_SIZE)
    runner.add_quick_option(train_parser, QUICK)

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
    return runner.with_quick_schedule(parser.parse_args(argv), train_parser, QUICK)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(runner.config_from_args(TrainConfig, args))
        return
    if args.command == "translate" and bool(args.sentences) == bool(args.file):
        raise UsageError("translate: give sentences or --file FILE (one of the two)")
    # A bad input file is reported before anything else, as its one line.
    sentences = (args.sentences or read_sentences(args.file)) if args.command == "translate" else []
    run = find_run(args.run_dir)
    # translate's stdout is the translations, line for line with its input: kept clean for pipes
    run.announce(file=sys.stderr if args.command == "translate" else None)
    run_dir = run.path
    if args.command == "evaluate":
        evaluate(run_dir, args.beam_width, args.alpha)
    elif args.command == "translate":
        for line in translate(sentences, run_dir, args.beam_width, args.alpha):
            print(line)
        sys.stdout.flush()
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
