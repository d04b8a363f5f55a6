"""Digit OCR with LeNet-5: train, evaluate, read digits from images, export for serving and phones.

    python -m apps.digit_ocr train                       # embedded digits, classic LeNet-5
    python -m apps.digit_ocr train --model lenet5-modern --data ../shared/data/mnist
    python -m apps.digit_ocr evaluate                    # the run trained last
    python -m apps.digit_ocr predict postcode.png amount.jpg
    python -m apps.digit_ocr export                      # -> saved_models/digit_ocr/<version>/

LeNet-5 and its batch-normalised variant are defined in `models/lenet.py`. Two models from before
the convolutional era read the same 32x32 frames as 1,024 pixels: `dbn`, a deep belief network
(`layers/dbn.py`: RBMs pretrained greedily without labels, then fine-tuned by backpropagation,
Hinton et al., 2006), and `dsn`, a deep stacking network (`layers/dsn.py`: modules whose upper
weights are solved in closed form, Deng & Yu, 2011).
"""

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from apps import runner
from apps.runner import UsageError
from layers.dbn import DeepBeliefNetwork
from layers.dsn import DeepStackingNetwork
from models.lenet import INPUT_SHAPE, build_lenet5, build_lenet5_modern
from pipelines import digit_frames
from pipelines import images as image_data
from serving import export as export_lib
from serving.litert import LiteRTModel

APP = "digit_ocr"
MODELS = ("lenet5", "lenet5-modern", "dbn", "dsn")
DEFAULT_MODEL = "lenet5"
DEFAULT_DATA = "digits"
EPOCHS = 30
BATCH_SIZE = 64  # per replica
LEARNING_RATE = 2e-3  # AdamW, decayed along a cosine to zero over the run
# AdamW's decoupled weight decay, per model: classic LeNet-5 wants strong decay, the batch-
# normalised one almost none (bench.mnist_lenet; bench/README.md).
WEIGHT_DECAY = {"lenet5": 5e-2, "lenet5-modern": 5e-4, "dbn": 1e-4}
SEED = 42
# Several steps per call into the graph; XLA is slower on a CPU (bench.lenet_tuning).
STEPS_PER_EXECUTION = 32
MODERN_DROPOUT = 0.0  # lenet5-modern does not overfit the distorted digits (bench/README.md)
# The deep belief network: Hinton et al.'s (2006) 500-500-2000 stack, each RBM pretrained by CD-1
# for DBN_PRETRAIN_EPOCHS, then `--epochs` of fine-tuning.
DBN_HIDDEN_UNITS = (500, 500, 2000)
DBN_PRETRAIN_EPOCHS = 10
# The deep stacking network: modules of DSN_HIDDEN_UNITS sigmoid units, each refined by
# DSN_REFINE_EPOCHS gradient epochs between closed-form solutions of its upper weights (for it,
# `--epochs` counts these refinement epochs per module).
DSN_MODULES = 3
DSN_HIDDEN_UNITS = 1500
DSN_REFINE_EPOCHS = 2
MODEL_BASE = Path("saved_models")


@dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. For the DSN `epochs` counts refinement epochs per module, or is a list
    with one count per module; None: the model's default."""

    data: str = DEFAULT_DATA
    model: str = DEFAULT_MODEL
    epochs: int | list[int] | None = None
    batch_size: int = BATCH_SIZE
    augment: bool = False
    seed: int = SEED
    dbn_units: tuple[int, ...] = DBN_HIDDEN_UNITS
    dbn_pretrain_epochs: int = DBN_PRETRAIN_EPOCHS
    dsn_modules: int = DSN_MODULES
    dsn_units: int | tuple[int, ...] = DSN_HIDDEN_UNITS  # one width, or one per module

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose from {', '.join(MODELS)}")
        if self.epochs is None:
            self.epochs = DSN_REFINE_EPOCHS if self.model == "dsn" else EPOCHS


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


# ---------------------------------------------------------------------------------------------
# The models: LeNet-5 (models/lenet.py), and the DBN and DSN of the project's layers
# ---------------------------------------------------------------------------------------------


def build_model(model_name: str, num_classes: int = 10,
                config: TrainConfig | None = None) -> keras.Model:
    config = config or TrainConfig(model=model_name)
    if model_name == "lenet5":
        return build_lenet5(num_classes)
    if model_name == "lenet5-modern":
        return build_lenet5_modern(num_classes, MODERN_DROPOUT)
    if model_name == "dbn":  # random weights; `pretrain_dbn` gives it the RBMs' weights
        return DeepBeliefNetwork(config.dbn_units).classifier(INPUT_SHAPE, num_classes)
    if model_name == "dsn":
        return DeepStackingNetwork(config.dsn_modules, config.dsn_units, num_classes)
    raise UsageError(f"--model {model_name}: choose from {', '.join(MODELS)}")


def pretrain_dbn(classifier: keras.Model, train_batches: tf.data.Dataset, run_dir: Path,
                 config: TrainConfig) -> None:
    """Greedy layer-wise pretraining of the RBM stack on the training images (labels unused),
    then the RBMs' weights and hidden biases into the classifier's sigmoid layers. What the
    stack has learned to imagine goes to dbn_samples.png."""
    dbn = DeepBeliefNetwork(config.dbn_units, seed=SEED)
    dbn.pretrain(train_batches, config.dbn_pretrain_epochs, verbose=config.verbose)
    pretrained = dbn.classifier(INPUT_SHAPE, classifier.output_shape[-1])
    for layer in pretrained.layers:
        if layer.name.endswith("_dense"):
            classifier.get_layer(layer.name).set_weights(layer.get_weights())
    save_image_grid(ops.convert_to_numpy(dbn.sample(100)), run_dir / "dbn_samples.png")


def save_image_grid(pixels: np.ndarray, path: Path, columns: int = 10) -> None:
    """[N, 1024] or [N, 32, 32, 1] values in [0, 1] -> one PNG sheet, `columns` images a row."""
    from PIL import Image

    tiles = np.clip(pixels.reshape(-1, *INPUT_SHAPE[:2]), 0, 1)
    rows = -(-len(tiles) // columns)
    sheet = np.zeros((rows * INPUT_SHAPE[0], columns * INPUT_SHAPE[1]))
    for i, tile in enumerate(tiles):
        row, column = divmod(i, columns)
        sheet[row * INPUT_SHAPE[0] : (row + 1) * INPUT_SHAPE[0],
              column * INPUT_SHAPE[1] : (column + 1) * INPUT_SHAPE[1]] = tile
    Image.fromarray((sheet * 255).astype(np.uint8)).save(path)


def train_dsn(model: DeepStackingNetwork, train_batches: tf.data.Dataset,
              validation_batches: tf.data.Dataset, num_classes: int,
              refine_epochs: int | Sequence[int], run_dir: Path, verbose,
              undistorted_batches: tf.data.Dataset | None = None) -> None:
    """Module by module; history.csv gets one row per module (its "epoch" is the module).

    `refine_epochs`: for every module, or a list with one count per module (0: W stays random).

    With distorted `train_batches`, each module is refined on them and its U is solved from
    `undistorted_batches`, the digits it will be asked about, or from those plus two distorted
    passes (a ridge regression on more, blurrier examples), whichever the validation digits
    prefer; on a tie, the one that saw more data. On MNIST neither won consistently
    (bench/README.md).
    """
    def one_hot(batches):
        return batches.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)))

    training, validation = one_hot(train_batches), one_hot(validation_batches)
    undistorted = one_hot(undistorted_batches) if undistorted_batches is not None else None
    if np.isscalar(refine_epochs):
        refine_epochs = [refine_epochs] * model.num_modules
    rows = []
    for k in range(model.num_modules):
        if verbose:
            print(f"DSN module {k + 1}/{model.num_modules}")
        on_validation = model.fit_module(k, training, refine_epochs=refine_epochs[k],
                                         validation_data=validation, verbose=verbose,
                                         solve_data=undistorted)
        if undistorted is not None:
            module = model.stack[k]
            upper_undistorted = module.upper.numpy()
            model.solve_upper(k, undistorted.concatenate(training.repeat(2)))
            with_distorted = model.evaluate(validation, verbose=0, return_dict=True)
            # a tie: the U that saw more digits
            keep_mixed = (with_distorted["categorical_accuracy"]
                          >= on_validation["categorical_accuracy"])
            if verbose:
                print(f"  validation error, U from the undistorted digits:"
                      f" {1 - on_validation['categorical_accuracy']:.2%}, with two distorted"
                      f" passes added: {1 - with_distorted['categorical_accuracy']:.2%}"
                      f" (kept: {'with' if keep_mixed else 'undistorted'})")
            if keep_mixed:
                on_validation = with_distorted
            else:
                module.upper.assign(upper_undistorted)
        on_training = model.evaluate(training, verbose=0, return_dict=True)
        rows.append({"epoch": k, **{f"{split}{name}": figures[key]
                                    for split, figures in (("", on_training),
                                                           ("val_", on_validation))
                                    for name, key in (("accuracy", "categorical_accuracy"),
                                                      ("loss", "loss"))}})
    with open(run_dir / "history.csv", "w") as handle:
        handle.write(",".join(rows[0]) + "\n")
        handle.writelines(",".join(str(v) for v in row.values()) + "\n" for row in rows)
    model.save(run_dir / "best.keras")


def compile_model(model: keras.Model, steps: int, model_name: str = DEFAULT_MODEL) -> keras.Model:
    strategy = tf.distribute.get_strategy()
    schedule = keras.optimizers.schedules.CosineDecay(
        runner.scaled_learning_rate(LEARNING_RATE, strategy), decay_steps=max(steps, 1))
    # Keras 3.15's multi-step loop fails under MirroredStrategy (InvalidArgumentError in
    # multi_step_on_iterator): one step per call there.
    replicas = strategy.num_replicas_in_sync
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=WEIGHT_DECAY[model_name]),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION if replicas == 1 else 1,
    )
    return model


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None) -> dict:
    """Trains on the data's training split, selects on validation, reports on test."""
    config = config or TrainConfig()
    run = runner.TrainingRun(APP, config, default_run_dir(config.model))
    dataset = image_data.load_image_dataset(config.data)
    steps_per_epoch = -(-image_data.count(dataset.train) // run.global_batch)

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return image_data.batches(dataset.train, run.global_batch, shuffle=True,
                                  augment=config.augment, seed=config.seed + epoch)

    validation_batches = image_data.batches(dataset.validation, run.global_batch)
    run.start(class_names=dataset.class_names)
    with run.strategy.scope():
        model = build_model(config.model, dataset.num_classes, config)
        if config.model == "dsn":
            undistorted = (image_data.batches(dataset.train, run.global_batch)
                           if config.augment else None)
            train_dsn(model, epoch_batches(0), validation_batches, dataset.num_classes,
                      config.epochs, run.path, config.verbose, undistorted)
        else:
            if config.model == "dbn" and run.resumed is None:
                pretrain_dbn(model, epoch_batches(0), run.path, config)
            compile_model(model, config.epochs * steps_per_epoch, config.model)
    steps = None
    if config.model == "dsn":
        runner.plot_history(run.path)
    else:
        steps = run.fit(model, epoch_batches, steps_per_epoch=steps_per_epoch,
                        validation_data=validation_batches)
    best_model, _ = load_run(run.path)
    metrics = held_out_metrics(best_model, dataset, run.path, config.model) | {"steps": steps}
    print(f"{APP} {config.model} on {dataset.name}: test accuracy"
          f" {metrics['test_accuracy']:.4f} ({metrics['test_examples']} images), run directory"
          f" {run.path}")
    return run.finish(metrics)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def find_run(run_dir: Path | None = None, model_name: str | None = None) -> runner.RunDir:
    """--run-dir, else the --model's directory, else the run trained last."""
    return runner.find_run(APP, run_dir, model_name and default_run_dir(model_name),
                           fallback=default_run_dir(DEFAULT_MODEL))


def load_run(run_dir: Path | None = None) -> tuple[keras.Model, dict]:
    run = find_run(run_dir)
    # Not compiled: what reads a finished run only predicts.
    return keras.saving.load_model(run.file("best.keras"), compile=False), run.config()


def held_out_metrics(model: keras.Model, dataset: image_data.ImageDataset, run_dir: Path,
                     model_name: str) -> dict:
    """Test accuracy and per-class precision / recall; evaluation.json and the confusion PNG."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    images, labels = image_data.labelled_arrays(dataset.test)
    predicted = model.predict(images, batch_size=256, verbose=0).argmax(axis=1)
    classes = list(range(dataset.num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    confusion = confusion_matrix(labels, predicted, labels=classes)
    plot_confusion(confusion, dataset.class_names, run_dir / "confusion_matrix.png")
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


def evaluate(run_dir: Path | None = None, data: str | None = None) -> dict:
    """`evaluate`: a run's best checkpoint on the test split of its data (or of `data`)."""
    run_dir = find_run(run_dir).path
    model, run = load_run(run_dir)
    dataset = image_data.load_image_dataset(data or run["data"])
    metrics = held_out_metrics(model, dataset, run_dir, run["model"])
    runner.print_table(
        [{"class": name, "precision": f"{v['precision']:.3f}", "recall": f"{v['recall']:.3f}",
          "f1": f"{v['f1']:.3f}", "support": v["support"]}
         for name, v in metrics["per_class"].items()]
    )
    print(
        f"\ntest accuracy {metrics['test_accuracy']:.4f} on {metrics['test_examples']} images of"
        f" {dataset.name}; confusion matrix and JSON in {run_dir}"
    )
    return metrics


def plot_confusion(confusion: np.ndarray, class_names: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5.4))
    axis.imshow(confusion, cmap="Blues")
    for (row, col), value in np.ndenumerate(confusion):
        if value:
            bright = value > confusion.max() / 2
            axis.text(col, row, value, ha="center", va="center", fontsize=8,
                      color="white" if bright else "black")
    ticks = range(len(class_names))
    axis.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
             xlabel="predicted", ylabel="true", title="Confusion matrix (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# predict: segment an image into digits, read each one
# ---------------------------------------------------------------------------------------------


def predict(files: list[Path], run_dir: Path | None = None) -> list[dict]:
    """Reads the digits in each image file: a string, and a confidence per digit. A picture of
    one digit is read whole, exactly as the SavedModel reads it; a row of digits is cut into
    one crop per digit."""
    for path in files:  # all checked up front: one line for a bad file, nothing read
        digit_frames.check_image_file(Path(path))
    model, run = load_run(run_dir)
    # Decoded by TensorFlow, as in the SavedModel (PIL converts colour to grey a little
    # differently).
    pictures = [digit_frames.digit_pictures(
        image_data.decode_grayscale(tf.io.read_file(str(path))).numpy()[..., 0])
        for path in files]
    frames = [image_data.mnist_normalize(picture).numpy()
              for file_pictures in pictures for picture in file_pictures]
    probabilities = (model.predict(image_data.to_model_input(np.stack(frames)), batch_size=256,
                                   verbose=0) if frames else np.zeros((0, len(run["class_names"]))))
    results, start = [], 0
    for path, file_pictures in zip(files, pictures):
        found = probabilities[start : start + len(file_pictures)]
        start += len(file_pictures)
        digits = [run["class_names"][i] for i in found.argmax(axis=1)]
        results.append({"file": str(path), "text": "".join(digits), "digits": digits,
                        "confidences": [float(p) for p in found.max(axis=1)]})
    return results


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------

TFLITE_SIGNATURE = "predict_pixels"
REPRESENTATIVE_IMAGES = 200  # calibration images for full-int8 quantisation


def serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    """`serving_default` reads encoded images; `predict_pixels` takes model-ready floats."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def read_encoded(images):  # [batch] PNG / JPEG / BMP / GIF bytes
        frames = tf.map_fn(
            lambda encoded: image_data.mnist_normalize(image_data.decode_grayscale(encoded)),
            images,
            fn_output_signature=tf.TensorSpec([28, 28, 1], tf.uint8),
        )
        probabilities = model(image_data.to_model_input(frames), training=False)
        return {"digit": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    def read_pixels(pixels):  # [batch, 32, 32, 1] float32 in [0, 1], light on dark
        probabilities = model(pixels, training=False)
        return {"digit": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    archive.add_endpoint(
        "serving_default", read_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images")],
    )
    archive.add_endpoint(
        TFLITE_SIGNATURE, read_pixels,
        input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.float32, name="pixels")],
    )
    return archive


def tflite_predictions(path: Path, images: np.ndarray) -> np.ndarray:
    """Class indices from a .tflite model run in the LiteRT interpreter, 256 images a call."""
    litert = LiteRTModel(path.read_bytes()).signature(TFLITE_SIGNATURE)
    return np.concatenate([
        litert(pixels=images[start : start + 256])["probabilities"].argmax(axis=1)
        for start in range(0, len(images), 256)
    ])


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's best model as the next version under `model_base/digit_ocr/`, each
    .tflite variant checked in LiteRT against Keras on the test split."""
    run_dir = find_run(run_dir).path
    model, run = load_run(run_dir)
    dataset = image_data.load_image_dataset(run["data"])
    test_images, test_labels = image_data.labelled_arrays(dataset.test)
    calibration, _ = image_data.labelled_arrays(dataset.train.take(REPRESENTATIVE_IMAGES))
    keras_predicted = model.predict(test_images, batch_size=256, verbose=0).argmax(axis=1)
    keras_accuracy = float((keras_predicted == test_labels).mean())

    def check(path: Path) -> dict:
        predicted = tflite_predictions(path, test_images)
        return {"accuracy": float((predicted == test_labels).mean()),
                "agreement_with_keras": float((predicted == keras_predicted).mean())}

    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(model),
        assets={
            "labels.txt": "\n".join(run["class_names"]) + "\n",
            # What `python -m serving.litert` needs to read image files with these models.
            "litert.json": {"signature": TFLITE_SIGNATURE, "input": "pixels",
                            "output": "probabilities", "labels": "labels.txt",
                            "preprocess": "mnist_digits"},
        },
        tflite=export_lib.TFLiteFiles(
            APP, TFLITE_SIGNATURE, check=check,
            representative_inputs=lambda: (x[None] for x in calibration)),
        report={"run": str(run_dir.resolve()), "keras": {"accuracy": keras_accuracy},
                "test_examples": int(len(test_labels))},
        progress=not quiet,
    )
    if not quiet:
        print(f"Keras best.keras: test accuracy {keras_accuracy:.4f}\n")
        runner.print_export(report)
    return report


def served_figures(version_dir: Path, run_dir: Path | None = None) -> list[dict]:
    """The test digits as a user sends them, PNG files, through every served path, beside what
    `evaluate` scores on the same digits: one row per path (the skew check)."""
    from PIL import Image

    from serving import litert

    model, run = load_run(run_dir)
    dataset = image_data.load_image_dataset(run["data"])
    frames = np.stack([image.numpy() for image, _ in dataset.test])  # uint8 [N, 28, 28, 1]
    labels = np.array([int(label) for _, label in dataset.test])
    names = run["class_names"]
    evaluated = model.predict(image_data.to_model_input(frames), verbose=0).argmax(axis=1)
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    with tempfile.TemporaryDirectory() as folder:
        files = [Path(folder, f"{i:05d}.png") for i in range(len(frames))]
        for path, frame in zip(files, frames):
            Image.fromarray(frame[..., 0]).save(path)
        encoded = tf.constant([path.read_bytes() for path in files])
        read = {"evaluate (Keras)": [names[i] for i in evaluated],
                "SavedModel serving_default": [
                    names[i] for i in served(images=encoded)["digit"].numpy()],
                "CLI predict": [result["text"] for result in predict(files, run_dir)]}
        extra = Path(version_dir) / export_lib.EXTRA_DIR
        config = {"input": "pixels", "output": "probabilities"}
        for variant in export_lib.TFLITE_VARIANTS:
            on_phone = LiteRTModel(extra / f"{APP}_{variant}.tflite").signature(TFLITE_SIGNATURE)
            read[f"LiteRT {variant}"] = [
                litert.read_digits(on_phone, config, digit_frames.read_grayscale(path), names)[0]
                for path in files]
    return [{"app": APP, "path": path, "figure": "test accuracy",
             "value": float(np.mean([text == names[label] for text, label in zip(texts, labels)])),
             "examples": len(labels)} for path, texts in read.items()]


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the default schedule on the embedded digits, then export."""
    metrics = train(TrainConfig(verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "digit OCR (LeNet-5)",
        "quality": f"test accuracy {metrics['test_accuracy']:.2%} ({metrics['test_examples']}"
                   " held-out digits)",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report),
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.digit_ocr",
        description="Digit OCR with LeNet-5: train, evaluate, read digits from images, export.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_options(sub):
        sub.add_argument("--model", choices=MODELS,
                         help="read runs/digit_ocr/<model> (default: the run trained last)")
        sub.add_argument("--run-dir", type=Path, help="the run directory to read")
        return sub

    train_parser = commands.add_parser("train", help="train a model")
    train_parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                              help="default: %(default)s")
    train_parser.add_argument("--run-dir", type=Path,
                              help="run directory (default: runs/digit_ocr/<model>)")
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="digits (embedded, default), a folder of MNIST IDX files, tfds:NAME,"
             " or a folder of one subfolder of images per class",
    )
    train_parser.add_argument("--augment", action="store_true",
                              help="light random shifts, rotations and zooms while training")
    runner.add_training_options(
        train_parser, None, BATCH_SIZE,
        epochs_help=f"default: {EPOCHS}; for the DSN, gradient refinement epochs per module"
                    f" (default {DSN_REFINE_EPOCHS})",
    )

    evaluate_parser = with_run_options(commands.add_parser("evaluate", help="test-split figures"))
    evaluate_parser.add_argument("--data", help="evaluate on another dataset (default: the run's)")

    predict_parser = with_run_options(
        commands.add_parser("predict", help="read the digits in image files")
    )
    predict_parser.add_argument("files", nargs="+", type=Path, metavar="IMAGE",
                                help="PNG/JPEG of any size, one or more digits in a row")

    export_parser = with_run_options(
        commands.add_parser("export", help="SavedModel version + .tflite files")
    )
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return parser.parse_args(argv)


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
        evaluate(run_dir, args.data)
    elif args.command == "predict":
        for result in predict(args.files, run_dir):
            confidences = " ".join(f"{c:.2f}" for c in result["confidences"])
            text = result["text"] or "(no digits found)"
            print(f"{result['file']}: {text}" + (f"  [{confidences}]" if confidences else ""))
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
