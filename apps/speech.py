"""Spoken digits: train, evaluate, read phone numbers from WAV files, export for serving and phones.

    python -m apps.speech train                          # embedded FSDD subset, CRNN + attention
    python -m apps.speech train --model dsn --data ../shared/data/fsdd
    python -m apps.speech train --data ../shared/data/fsdd --holdout theo   # speaker-independent
    python -m apps.speech train --data ../shared/data/fsdd --frontend none  # a plain BiLSTM
    python -m apps.speech evaluate                       # the run trained last
    python -m apps.speech predict number.wav             # "0 4 7 1 ..." with a confidence each
    python -m apps.speech export                         # -> saved_models/speech/<version>/

A recording becomes 61 frames of 40 log-mel bands (`pipelines.audio`, with `tf.signal`; its numpy
twin `pipelines.wav` serves the LiteRT runner). `--model lstm` reads them with two blocks of
convolutions over frames and mels (a CRNN; `--frontend none` leaves them out), stacked
bidirectional LSTMs (or GRUs, `--cell gru`) and attention pooling; `--model dsn` with the deep
stacking network of `layers/dsn.py` on the frames stacked into one window (`models/speech.py`).
`predict` cuts a recording at its pauses and reads each stretch as one digit.
"""

import argparse
import shutil
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import runner
from apps.digit_ocr import plot_confusion
from apps.runner import UsageError
from layers.dsn import DeepStackingNetwork
from models.speech import (
    DYNAMIC_RANGE_DB,
    FRONTENDS,
    build_dsn_classifier,
    build_dsn_frontend,
    build_ensemble,
    build_rnn_classifier,
)
from pipelines import audio, wav
from serving import export as export_lib

APP = "speech"
MODELS = ("lstm", "dsn")
CELLS = ("lstm", "gru")
DEFAULT_MODEL = "lstm"
# What reads the normalised frames before the recurrent layers: a few convolutions
# (`models.speech.conv_frontend`, a CRNN), or nothing. The CRNN hears speakers it was not trained
# on better, and on the official FSDD split it is the one above 99% (bench/README.md).
DEFAULT_FRONTEND = "conv"
EPOCHS = 40
BATCH_SIZE = 32  # per replica
LEARNING_RATE = 3e-3  # Adam, decayed along a cosine to zero over the run
UNITS = 64  # per direction
NUM_LAYERS = 2
ATTENTION_UNITS = 64
DROPOUT = 0.3
SEED = 42
STEPS_PER_EXECUTION = 8
# The deep stacking network: DSN_MODULES modules of DSN_UNITS sigmoid units, each refined for
# `--epochs` (default DSN_REFINE_EPOCHS) full-batch gradient epochs through its closed-form upper
# weights. It trains on the clean recordings plus DSN_AUGMENTED_PASSES augmented copies of them.
# Five modules: three, five and eight were measured at several seeds (bench/README.md).
DSN_MODULES = 5
DSN_UNITS = 1000
DSN_REFINE_EPOCHS = 30
DSN_AUGMENTED_PASSES = 4
QUICK = {"epochs": 35}  # `train --quick`, what `make demo` trains
MODEL_BASE = Path("saved_models")


@dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. For the DSN `epochs` counts refinement epochs per module."""

    data: str = audio.DEFAULT_DATA
    holdout: str | None = None  # a speaker whose recordings are the test set
    model: str = DEFAULT_MODEL
    cell: str = "lstm"
    frontend: str = DEFAULT_FRONTEND
    units: int = UNITS
    layers: int = NUM_LAYERS
    epochs: int | None = None
    batch_size: int = BATCH_SIZE
    augment: bool = True
    warp: bool = False  # vocal tract length perturbation besides the other augmentation
    seed: int = SEED
    dsn_modules: int = DSN_MODULES
    dsn_units: int = DSN_UNITS
    members: int = 1  # recurrent classifiers trained from seeds seed, seed + 1, ...; averaged

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose from {', '.join(MODELS)}")
        if self.cell not in CELLS:
            raise UsageError(f"--cell {self.cell}: choose from {', '.join(CELLS)}")
        if self.frontend not in FRONTENDS:
            raise UsageError(f"--frontend {self.frontend}: choose from {', '.join(FRONTENDS)}")
        if self.members < 1 or (self.members > 1 and self.model == "dsn"):
            raise UsageError(f"--members {self.members}: 1 or more, of --model lstm")
        if self.epochs is None:
            self.epochs = DSN_REFINE_EPOCHS if self.model == "dsn" else EPOCHS


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


# ---------------------------------------------------------------------------------------------
# The models (models/speech.py)
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, unroll: bool = False,
                dynamic_range_db: float | None = DYNAMIC_RANGE_DB) -> keras.Model:
    """The recurrent classifier of `config`, or the ensemble of `config.members` of them (the
    DSN is built while it trains: `train_dsn`)."""
    def member(name=None):
        return build_rnn_classifier(config.cell, config.units, config.layers, ATTENTION_UNITS,
                                    DROPOUT, unroll=unroll, frontend=config.frontend,
                                    dynamic_range_db=dynamic_range_db, name=name)

    if config.members == 1:
        return member()
    return build_ensemble([member(f"member_{k}") for k in range(config.members)])


def compile_model(model: keras.Model, steps: int) -> keras.Model:
    strategy = tf.distribute.get_strategy()
    schedule = keras.optimizers.schedules.CosineDecay(
        runner.scaled_learning_rate(LEARNING_RATE, strategy), decay_steps=max(steps, 1))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        # Keras 3.15's multi-step loop fails under MirroredStrategy: one step per call there.
        steps_per_execution=STEPS_PER_EXECUTION if strategy.num_replicas_in_sync == 1 else 1,
    )
    return model


def train_dsn(dataset: audio.SpeechDataset, config: TrainConfig, run_dir: Path) -> keras.Model:
    """Module by module on the stacked-window vectors; history.csv gets a row per module (its
    "epoch" is the module). Returns the whole classifier, saved as best.keras."""
    frontend = build_dsn_frontend()

    def vectors(batches):
        pairs = [(frontend(inputs).numpy(), labels.numpy()) for inputs, labels in batches]
        return np.concatenate([v for v, _ in pairs]), np.concatenate([y for _, y in pairs])

    passes = [audio.batches(dataset.train, 256)] + [
        audio.batches(dataset.train, 256, shuffle=True, augment_data=True, warp=config.warp,
                      seed=config.seed + p)
        for p in range(DSN_AUGMENTED_PASSES if config.augment else 0)]
    train_x, train_y = map(np.concatenate, zip(*(vectors(b) for b in passes)))
    valid_x, valid_y = vectors(audio.batches(dataset.validation, 256))

    def one_hot(x, y):  # any batch size: the DSN re-batches to its own (thousands)
        return tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, dataset.num_classes))).batch(
            1024)

    dsn = DeepStackingNetwork(config.dsn_modules, config.dsn_units, dataset.num_classes)
    rows = []
    for k in range(config.dsn_modules):
        if config.verbose:
            print(f"DSN module {k + 1}/{config.dsn_modules}")
        on_validation = dsn.fit_module(k, one_hot(train_x, train_y),
                                       refine_epochs=config.epochs,
                                       validation_data=one_hot(valid_x, valid_y), verbose=0)
        on_training = dsn.evaluate(one_hot(train_x, train_y), verbose=0, return_dict=True)
        rows.append({"epoch": k, "accuracy": on_training["categorical_accuracy"],
                     "loss": on_training["loss"],
                     "val_accuracy": on_validation["categorical_accuracy"],
                     "val_loss": on_validation["loss"]})
    with open(run_dir / "history.csv", "w") as handle:
        handle.write(",".join(rows[0]) + "\n")
        handle.writelines(",".join(str(v) for v in row.values()) + "\n" for row in rows)
    # A fresh copy of the stack: the trained one carries the refinement's Adam state, which an
    # inference model has no use for (and which loading it would warn about).
    trained = DeepStackingNetwork(config.dsn_modules, config.dsn_units, dataset.num_classes)
    trained.build((None, train_x.shape[1]))
    trained.set_weights(dsn.get_weights())
    model = build_dsn_classifier(frontend, trained)
    model.save(run_dir / "best.keras")
    return model


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None) -> dict:
    """Trains on the data's training split, keeps the epoch with the lowest validation loss,
    reports on the test split."""
    config = config or TrainConfig()
    run = runner.TrainingRun(APP, config, default_run_dir(config.model))
    dataset = audio.load_speech_dataset(config.data, config.holdout, config.seed)
    steps_per_epoch = -(-len(dataset.train) // run.global_batch)

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return audio.batches(dataset.train, run.global_batch, shuffle=True,
                             augment_data=config.augment, warp=config.warp,
                             seed=config.seed + epoch)

    validation_batches = audio.batches(dataset.validation, run.global_batch)
    # Members left by a killed ensemble are kept; those of a finished one are not.
    resuming_members = (run.path / "member_0").is_dir() and not (
        run.path / "metrics.json").is_file()
    run.start(class_names=dataset.class_names, data_name=dataset.name,
              train_recordings=len(dataset.train))
    steps = None
    if config.model == "dsn":
        with run.strategy.scope():
            train_dsn(dataset, config, run.path)
        runner.plot_history(run.path)
    elif config.members > 1:
        train_members(config, run.path, resuming_members)
    else:
        with run.strategy.scope():
            model = compile_model(build_model(config), config.epochs * steps_per_epoch)
        # The lowest validation loss, not the best accuracy: on a few dozen validation
        # recordings the accuracy reaches its top early and would keep an undertrained epoch.
        steps = run.fit(model, epoch_batches, steps_per_epoch=steps_per_epoch,
                        validation_data=validation_batches, monitor="val_loss", mode="min")
    best_model, _ = load_run(run.path)
    metrics = held_out_metrics(best_model, dataset, run.path, config.model) | {
        "steps": steps, "training_seconds": run.training_seconds}
    print(f"{APP} {config.model} on {dataset.name}: test accuracy"
          f" {metrics['test_accuracy']:.4f} ({metrics['test_examples']} recordings), run"
          f" directory {run.path}")
    return run.finish(metrics)


def train_members(config: TrainConfig, run_dir: Path, resuming: bool) -> None:
    """`--members N`: N recurrent classifiers trained one after another from seeds seed,
    seed + 1, ..., each a run of its own in run_dir/member_k (backups, history, figures), then
    joined by the mean of their probabilities into run_dir/best.keras. Run again after a kill,
    it keeps the members it finished and resumes the one it was training."""
    trained = []
    for k in range(config.members):
        member_dir = run_dir / f"member_{k}"
        if not resuming and member_dir.exists():
            shutil.rmtree(member_dir)
        if not (member_dir / "metrics.json").is_file():
            train(replace(config, members=1, seed=config.seed + k, run_dir=member_dir,
                          mark_last=False))
        trained.append(load_run(member_dir)[0])
    ensemble = build_model(config)
    for k, member in enumerate(trained):
        ensemble.get_layer(f"member_{k}").set_weights(member.get_weights())
    ensemble.save(run_dir / "best.keras")


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def find_run(run_dir: Path | None = None, model_name: str | None = None) -> runner.RunDir:
    """--run-dir, else the --model's directory, else the run trained last."""
    return runner.find_run(APP, run_dir, model_name and default_run_dir(model_name),
                           fallback=default_run_dir(DEFAULT_MODEL))


def load_run(run_dir: Path | None = None) -> tuple[keras.Model, dict]:
    run = find_run(run_dir)
    return keras.saving.load_model(run.file("best.keras"), compile=False), run.config()


def predict_probabilities(model: keras.Model, split: audio.SpeechSplit) -> np.ndarray:
    if not len(split):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate([model.predict_on_batch(inputs)
                           for inputs, _ in audio.batches(split, 256)])


def held_out_metrics(model: keras.Model, dataset: audio.SpeechDataset, run_dir: Path,
                     model_name: str) -> dict:
    """Test accuracy and per-digit precision / recall; evaluation.json and the confusion PNG."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = dataset.test.labels
    predicted = predict_probabilities(model, dataset.test).argmax(axis=1)
    classes = list(range(dataset.num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    plot_confusion(confusion_matrix(labels, predicted, labels=classes), dataset.class_names,
                   run_dir / "confusion_matrix.png")
    metrics = {
        "model": model_name,
        "data": dataset.name,
        "test_accuracy": float((predicted == labels).mean()),
        "test_examples": int(len(labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(dataset.class_names, precision, recall, f1, support)
        },
    }
    runner.write_json(run_dir / "evaluation.json", metrics)
    return metrics


def evaluate(run_dir: Path | None = None, data: str | None = None,
             holdout: str | None = None) -> dict:
    """`evaluate`: a run's best checkpoint on the test split of its data (or of `data`)."""
    run_dir = find_run(run_dir).path
    model, run = load_run(run_dir)
    dataset = audio.load_speech_dataset(data or run["data"],
                                        holdout if data else holdout or run.get("holdout"))
    metrics = held_out_metrics(model, dataset, run_dir, run["model"])
    runner.print_table(
        [{"digit": name, "precision": f"{v['precision']:.3f}", "recall": f"{v['recall']:.3f}",
          "f1": f"{v['f1']:.3f}", "support": v["support"]}
         for name, v in metrics["per_class"].items()])
    print(f"\ntest accuracy {metrics['test_accuracy']:.4f} on {metrics['test_examples']}"
          f" recordings of {dataset.name}; confusion matrix and JSON in {run_dir}")
    return metrics


# ---------------------------------------------------------------------------------------------
# predict: cut a recording at its pauses, read each digit
# ---------------------------------------------------------------------------------------------


def read_digits(model: keras.Model, recordings: list[np.ndarray]) -> np.ndarray:
    """8 kHz recordings of one digit each -> probabilities [N, 10], features by TensorFlow as
    in evaluate and the SavedModel."""
    if not recordings:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return predict_probabilities(model, audio.to_split(recordings, np.zeros(len(recordings))))


def predict(files: list[Path], run_dir: Path | None = None) -> list[dict]:
    """Reads the digits spoken in each WAV file: a string and a confidence per digit. A
    recording with no pause is read whole, exactly as evaluate and the SavedModel read it."""
    recordings = [wav.read_wav(path) for path in files]  # all checked up front
    model, run = load_run(run_dir)
    pieces = [wav.split_at_pauses(samples) for samples in recordings]
    pieces = [found if len(found) > 1 else [samples]
              for found, samples in zip(pieces, recordings)]
    probabilities = read_digits(model, [piece for found in pieces for piece in found])
    results, start = [], 0
    for path, found in zip(files, pieces):
        chunk = probabilities[start : start + len(found)]
        start += len(found)
        digits = [run["class_names"][i] for i in chunk.argmax(axis=1)]
        results.append({"file": str(path), "text": "".join(digits), "digits": digits,
                        "confidences": [float(p) for p in chunk.max(axis=1)]})
    return results


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------

TFLITE_SIGNATURE = "classify"
TFLITE_VARIANTS = ("float32", "int8")
# Full-int8 quantisation is calibrated on this many training recordings, spread evenly over the
# split: its files come in digit order, and the first ones alone would all say "zero".
REPRESENTATIVE_RECORDINGS = 200


def calibration_picks(recordings: int, count: int = REPRESENTATIVE_RECORDINGS) -> np.ndarray:
    """Indices of `count` recordings equally spaced over a split of `recordings` (all of them
    when it holds fewer): every digit and speaker calibrates the int8 ranges."""
    return np.unique(np.linspace(0, recordings - 1, min(count, recordings)).round().astype(int))


def serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    """`serving_default` reads WAV bytes (16-bit PCM, any rate, mono or stereo) and computes the
    log-mel frames in the graph; `classify` takes the frames, for TFLite."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def read_wav_bytes(audio_bytes):  # [batch] WAV files
        clips, lengths = tf.map_fn(
            audio.decode_wav, audio_bytes,
            fn_output_signature=(tf.TensorSpec([wav.CLIP_SAMPLES], tf.float32),
                                 tf.TensorSpec([], tf.int32)))
        probabilities = model({"features": audio.log_mel(clips),
                               "frames": audio.valid_frames(lengths)}, training=False)
        return {"digit": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    archive.add_endpoint("serving_default", read_wav_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="audio")])
    return archive


def tflite_archive(model: keras.Model, run: dict) -> keras.export.ExportArchive:
    """`classify` on one recording's frames, fixed shapes. The recurrent model is rebuilt with
    its recurrence unrolled: TF 2.21's int8 calibration crashes on an RNN's while loop."""
    if run["model"] != "dsn":
        members = run.get("members", 1)
        # The trained model's own floor: a run trained before it had none.
        normalize = (model.get_layer("member_0") if members > 1 else model).get_layer("normalize")
        unrolled = build_model(TrainConfig(**{key: run[key] for key in (
            "model", "cell", "units", "layers")}, frontend=run.get("frontend", "none"),
            members=members), unroll=True, dynamic_range_db=normalize.dynamic_range_db)
        unrolled.set_weights(model.get_weights())
        model = unrolled
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        TFLITE_SIGNATURE,
        lambda features, frames: {"probabilities": model(
            {"features": features, "frames": frames}, training=False)},
        input_signature=[tf.TensorSpec([1, wav.NUM_FRAMES, wav.NUM_MELS], tf.float32,
                                       name="features"),
                         tf.TensorSpec([1], tf.int32, name="frames")])
    return archive


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's best model as the next version under `model_base/speech/`, each
    .tflite variant run in LiteRT (features by the numpy twin) against Keras on the test split."""
    from serving import litert, litert_speech

    run_dir = find_run(run_dir).path
    model, run = load_run(run_dir)
    dataset = audio.load_speech_dataset(run["data"], run.get("holdout"))
    labels = dataset.test.labels
    keras_predicted = predict_probabilities(model, dataset.test).argmax(axis=1)
    keras_accuracy = float((keras_predicted == labels).mean())
    twin = wav.model_inputs([clip[:n] for clip, n in zip(dataset.test.clips,
                                                         dataset.test.lengths)])
    calibration = audio.arrays(dataset.train.subset(calibration_picks(len(dataset.train))))

    def check(path: Path) -> dict:
        classify = litert_speech.open_signature(path)
        predicted = litert.digit_probabilities(classify, twin).argmax(axis=1)
        return {"accuracy": float((predicted == labels).mean()),
                "agreement_with_keras": float((predicted == keras_predicted).mean())}

    def calibration_inputs():  # for int8: recordings one at a time, by input name
        return ({"features": calibration["features"][i : i + 1],
                 "frames": calibration["frames"][i : i + 1]}
                for i in range(len(calibration["frames"])))

    with warnings.catch_warnings():
        # The int8 calibration runs TensorFlow's own (deprecated) interpreter, which says so.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        report = export_lib.write_version(
            Path(model_base) / APP, serving_archive(model),
            assets={
                "labels.txt": "\n".join(run["class_names"]) + "\n",
                # What `python -m serving.litert` needs to read WAV files with these models.
                "litert.json": {"signature": TFLITE_SIGNATURE, "output": "probabilities",
                                "labels": "labels.txt", "preprocess": "wav_log_mel"},
            },
            tflite=export_lib.TFLiteFiles(
                APP, TFLITE_SIGNATURE, variants=TFLITE_VARIANTS, check=check,
                archive=tflite_archive(model, run), representative_inputs=calibration_inputs),
            report={"run": str(run_dir.resolve()), "keras": {"accuracy": keras_accuracy},
                    "test_examples": int(len(labels))},
            progress=not quiet,
        )
    if not quiet:
        print(f"Keras best.keras: test accuracy {keras_accuracy:.4f}\n")
        runner.print_export(report)
    return report


def served_figures(version_dir: Path, run_dir: Path | None = None) -> list[dict]:
    """The test recordings as a user sends them, WAV files, through every served path, beside
    what `evaluate` scores on the same recordings: one row per path (the skew check)."""
    from serving import litert, litert_speech

    model, run = load_run(run_dir)
    dataset = audio.load_speech_dataset(run["data"], run.get("holdout"))
    names, labels = run["class_names"], dataset.test.labels
    evaluated = predict_probabilities(model, dataset.test).argmax(axis=1)
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    with tempfile.TemporaryDirectory() as folder:
        files = [wav.write_wav(Path(folder, f"{i:04d}.wav"), clip[:n])
                 for i, (clip, n) in enumerate(zip(dataset.test.clips, dataset.test.lengths))]
        encoded = tf.constant([path.read_bytes() for path in files])
        read = {"evaluate (Keras)": [names[i] for i in evaluated],
                "SavedModel serving_default": [
                    names[i] for i in served(audio=encoded)["digit"].numpy()],
                "CLI predict": [result["text"] for result in predict(files, run_dir)]}
        extra = Path(version_dir) / export_lib.EXTRA_DIR
        for variant in TFLITE_VARIANTS:
            classify = litert_speech.open_signature(extra / f"{APP}_{variant}.tflite")
            read[f"LiteRT {variant}"] = [result["text"] for result in
                                         litert.read_wav_files(classify, files, names)]
    return [{"app": APP, "path": path, "figure": "test accuracy",
             "value": float(np.mean([text == names[label] for text, label in zip(texts, labels)])),
             "examples": len(labels)} for path, texts in read.items()]


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the quick schedule on the embedded FSDD subset, then export."""
    metrics = train(TrainConfig(**QUICK, verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "speech (CRNN: convolutions, BiLSTM, attention; FSDD subset)",
        "quality": f"test accuracy {metrics['test_accuracy']:.2%} ({metrics['test_examples']}"
                   " held-out recordings)",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report),
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.speech",
        description="Spoken digits: train, evaluate, read digit strings from WAV files, export.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_options(sub):
        sub.add_argument("--model", choices=MODELS,
                         help="read runs/speech/<model> (default: the run trained last)")
        sub.add_argument("--run-dir", type=Path, help="the run directory to read")
        return sub

    data_help = (f"{audio.DEFAULT_DATA} (embedded, default), a folder of FSDD recordings,"
                 " tfds:spoken_digit, or a folder of one subfolder of WAV files per label")
    train_parser = commands.add_parser("train", help="train a model")
    train_parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                              help="default: %(default)s")
    train_parser.add_argument("--cell", choices=CELLS, default="lstm",
                              help="the recurrent cell of --model lstm (default: %(default)s)")
    train_parser.add_argument("--frontend", choices=FRONTENDS, default=DEFAULT_FRONTEND,
                              help="before the recurrent layers of --model lstm: nothing, or"
                                   " convolutions over frames and mels (a CRNN; default:"
                                   " %(default)s)")
    train_parser.add_argument("--units", type=int, default=UNITS,
                              help="recurrent units per direction (default: %(default)s)")
    train_parser.add_argument("--layers", type=int, default=NUM_LAYERS,
                              help="stacked bidirectional layers (default: %(default)s)")
    train_parser.add_argument("--members", type=int, default=1,
                              help="--model lstm: an ensemble of this many, trained from seeds"
                                   " --seed, --seed + 1, ... (default: %(default)s)")
    train_parser.add_argument("--run-dir", type=Path,
                              help="run directory (default: runs/speech/<model>)")
    train_parser.add_argument("--data", default=audio.DEFAULT_DATA, help=data_help)
    train_parser.add_argument("--holdout", metavar="SPEAKER",
                              help="FSDD: test on this speaker's recordings, train on the others")
    train_parser.add_argument("--no-augment", dest="augment", action="store_false",
                              help="no time shift, noise or SpecAugment masks while training")
    train_parser.add_argument("--warp", action="store_true",
                              help="also stretch each training recording's mel axis by up to"
                                   f" {audio.WARP * 100:.0f}%% (vocal tract length perturbation)")
    runner.add_training_options(
        train_parser, None, BATCH_SIZE,
        epochs_help=f"default: {EPOCHS}; for the DSN, refinement epochs per module"
                    f" (default {DSN_REFINE_EPOCHS})")
    runner.add_quick_option(train_parser, QUICK)

    evaluate_parser = with_run_options(commands.add_parser("evaluate", help="test-split figures"))
    evaluate_parser.add_argument("--data", help="evaluate on another dataset (default: the run's)")
    evaluate_parser.add_argument("--holdout", metavar="SPEAKER",
                                 help="FSDD: this speaker's recordings as the test set")

    predict_parser = with_run_options(
        commands.add_parser("predict", help="read the digits spoken in WAV files"))
    predict_parser.add_argument("files", nargs="+", type=Path, metavar="WAV",
                                help="one digit, or several with pauses between them")

    export_parser = with_run_options(
        commands.add_parser("export", help="SavedModel version + .tflite files"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return runner.with_quick_schedule(parser.parse_args(argv), train_parser, QUICK)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(runner.config_from_args(TrainConfig, args))
        return
    run = find_run(args.run_dir, args.model)
    run.announce()
    run_dir = run.path
    if args.command == "evaluate":
        evaluate(run_dir, args.data, args.holdout)
    elif args.command == "predict":
        for result in predict(args.files, run_dir):
            confidences = " ".join(f"{c:.2f}" for c in result["confidences"])
            print(f"{result['file']}: {result['text']}  [{confidences}]")
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
