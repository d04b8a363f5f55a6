"""Digit OCR with LeNet-5: train, evaluate, read digits from images, export for serving and phones.

    python -m apps.digit_ocr train                       # embedded digits, classic LeNet-5
    python -m apps.digit_ocr train --model lenet5-modern --data ../shared/data/mnist
    python -m apps.digit_ocr evaluate
    python -m apps.digit_ocr predict postcode.png amount.jpg
    python -m apps.digit_ocr export                      # -> saved_models/digit_ocr/<version>/

LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998) reads a 32x32 image through two rounds of
convolution and subsampling, then three fully connected layers:

    32x32x1 -C1 6@5x5-> 28x28x6 -S2-> 14x14x6 -C3 16@5x5-> 10x10x16 -S4-> 5x5x16
            -C5 120@5x5-> 120 -F6 84-> 84 -> 10

`lenet5` keeps the paper's choices: tanh units, average-pool subsampling and C3's sparse connection
table (each C3 map sees 3, 4 or all 6 of the S2 maps, Table I of the paper). The output is a
softmax instead of the paper's Euclidean RBF units. `lenet5-modern` keeps the topology with what
came after: ReLU, max pooling and batch normalisation (dropout is available, off by default).

Two models from before the convolutional era read the same 32x32 frames as 1,024 pixels:
`dbn`, a deep belief network (`layers/dbn.py`: RBMs pretrained greedily without labels, then
fine-tuned by backpropagation, Hinton et al., 2006), and `dsn`, a deep stacking network
(`layers/dsn.py`: modules whose upper weights are solved in closed form, Deng & Yu, 2011).
"""

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from tqdm import tqdm

from apps import runner
from apps.runner import UsageError
from layers.dbn import DeepBeliefNetwork
from layers.dsn import DeepStackingNetwork
from pipelines import digit_frames
from pipelines import images as image_data
from serving import export as exporting
from serving.litert import LiteRTModel

APP = "digit_ocr"
MODELS = ("lenet5", "lenet5-modern", "dbn", "dsn")
DEFAULT_MODEL = "lenet5"
DEFAULT_DATA = "digits"
EPOCHS = 30
BATCH_SIZE = 64  # per replica
LEARNING_RATE = 2e-3  # AdamW, decayed along a cosine to zero over the run
# AdamW's decoupled weight decay, per model: classic LeNet-5 gains ~0.5 point on the embedded
# digits from strong decay; the batch-normalised one is best with almost none (MNIST runs of
# bench/mnist_lenet.py, table in bench/README.md).
WEIGHT_DECAY = {"lenet5": 5e-2, "lenet5-modern": 5e-4, "dbn": 1e-4}
SEED = 42
STEPS_PER_EXECUTION = 32
# Dropout before F6 and before the output layer of lenet5-modern: none. With 6 and 16 feature
# maps the net does not even fit the distorted training digits (99.7%), so there is nothing for
# dropout to hold back (bench/README.md).
MODERN_DROPOUT = 0.0
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
INPUT_SHAPE = (image_data.MODEL_SIZE, image_data.MODEL_SIZE, 1)
MODEL_BASE = Path("saved_models")


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


# ---------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------

# LeNet-5's Table I: which of the 6 S2 maps (rows) feed each of the 16 C3 maps (columns).
# Maps 0-5 see 3 neighbouring S2 maps, 6-11 see 4 neighbours, 12-14 see 4 non-neighbours,
# map 15 sees all 6. Breaking the symmetry this way makes the maps learn different features.
C3_INPUTS = (
    [[j, (j + 1) % 6, (j + 2) % 6] for j in range(6)]
    + [[j, (j + 1) % 6, (j + 2) % 6, (j + 3) % 6] for j in range(6)]
    + [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5]]
    + [list(range(6))]
)


@keras.saving.register_keras_serializable(package=APP)
class ConnectionTable(keras.constraints.Constraint):
    """Keeps a convolution kernel [h, w, in, out] at zero where `inputs[out]` omits an input map."""

    def __init__(self, inputs, input_maps):
        self.inputs = [list(map(int, sources)) for sources in inputs]
        self.input_maps = int(input_maps)
        mask = np.zeros((self.input_maps, len(self.inputs)), dtype="float32")
        for out, sources in enumerate(self.inputs):
            mask[sources, out] = 1.0
        self.mask = mask

    def __call__(self, kernel):
        return kernel * ops.convert_to_tensor(self.mask, dtype=kernel.dtype)

    def get_config(self):
        return {"inputs": self.inputs, "input_maps": self.input_maps}


# Glorot's range for C5 as a 5x5 convolution: fan-in 5 x 5 x 16, fan-out 5 x 5 x 120.
C5_INIT_LIMIT = float(np.sqrt(6 / (5 * 5 * 16 + 5 * 5 * 120)))


def build_lenet5(num_classes: int = 10) -> keras.Model:
    c3_table = ConnectionTable(C3_INPUTS, input_maps=6)
    inputs = keras.Input(INPUT_SHAPE, name="pixels")
    x = layers.Conv2D(6, 5, activation="tanh", name="C1")(inputs)  # 28x28x6
    x = layers.AveragePooling2D(2, name="S2")(x)  # 14x14x6
    x = layers.Conv2D(16, 5, activation="tanh", kernel_constraint=c3_table, name="C3")(x)  # 10x10
    x = layers.AveragePooling2D(2, name="S4")(x)  # 5x5x16
    # C5's 5x5 window covers the whole 5x5 S4 map, so C5 is a fully connected layer over its 400
    # values (the paper calls it a convolution only because a larger input would give it more
    # than one position). As a matmul it trains LeNet-5 13% faster than as a convolution on
    # this CPU (bench/README.md). Its weights start in the convolution's Glorot range, so
    # training starts where it always did. (A new initializer for each model: it draws its seed
    # when it is made, which must come after the run's seed is set.)
    x = layers.Flatten()(x)  # 400
    c5_init = keras.initializers.RandomUniform(-C5_INIT_LIMIT, C5_INIT_LIMIT)
    x = layers.Dense(120, activation="tanh", kernel_initializer=c5_init, name="C5")(x)
    x = layers.Dense(84, activation="tanh", name="F6")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="lenet5")
    # Constraints act after each update; start from a kernel that already obeys the table.
    c3 = model.get_layer("C3")
    c3.kernel.assign(c3_table(c3.kernel))
    return model


def build_lenet5_modern(num_classes: int = 10, dropout: float = MODERN_DROPOUT) -> keras.Model:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync

    def conv_block(x, filters, name, pool=True):
        x = layers.Conv2D(filters, 5, use_bias=False, name=name)(x)
        # Synchronised across replicas: N replicas normalise with the statistics of the whole
        # global batch, as one device does (not on one device, where it would only cost time).
        x = layers.BatchNormalization(synchronized=replicas > 1, name=f"{name}_bn")(x)
        x = layers.ReLU()(x)
        return layers.MaxPooling2D(2)(x) if pool else x

    inputs = keras.Input(INPUT_SHAPE, name="pixels")
    x = conv_block(inputs, 6, "C1")  # 14x14x6
    x = conv_block(x, 16, "C3")  # 5x5x16
    x = conv_block(x, 120, "C5", pool=False)  # 1x1x120
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(84, activation="relu", name="F6")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lenet5_modern")


def build_dbn(num_classes: int = 10) -> keras.Model:
    """The DBN's classifier with random weights; `pretrain_dbn` gives it the RBMs' weights."""
    return DeepBeliefNetwork(DBN_HIDDEN_UNITS).classifier(INPUT_SHAPE, num_classes)


def pretrain_dbn(classifier: keras.Model, train_batches: tf.data.Dataset, run_dir: Path,
                 verbose) -> None:
    """Greedy layer-wise pretraining of the RBM stack on the training images (labels unused),
    then the RBMs' weights and hidden biases into the classifier's sigmoid layers. What the
    stack has learned to imagine goes to dbn_samples.png."""
    dbn = DeepBeliefNetwork(DBN_HIDDEN_UNITS, seed=SEED)
    dbn.pretrain(train_batches, DBN_PRETRAIN_EPOCHS, verbose=verbose)
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


def build_dsn(num_classes: int = 10) -> keras.Model:
    return DeepStackingNetwork(DSN_MODULES, DSN_HIDDEN_UNITS, num_classes)


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


def build_model(model_name: str, num_classes: int = 10) -> keras.Model:
    builders = {"lenet5": build_lenet5, "lenet5-modern": build_lenet5_modern, "dbn": build_dbn,
                "dsn": build_dsn}
    if model_name not in builders:
        raise UsageError(f"--model {model_name}: choose from {', '.join(MODELS)}")
    return builders[model_name](num_classes)


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
        # Several steps per call into the graph: 1.5x the images/s of one step per call for a
        # model this small. XLA (jit_compile) made it 0.6x on the CPU (bench/README.md).
        steps_per_execution=STEPS_PER_EXECUTION if replicas == 1 else 1,
    )
    return model


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def default_epochs(model_name: str) -> int:
    return DSN_REFINE_EPOCHS if model_name == "dsn" else EPOCHS


def count(split: tf.data.Dataset) -> int:
    known = int(split.cardinality())
    return known if known >= 0 else sum(1 for _ in split)


def train(
    data: str = DEFAULT_DATA,
    model_name: str = DEFAULT_MODEL,
    epochs: int | Sequence[int] | None = None,
    batch_size: int = BATCH_SIZE,
    strategy_name: str = "auto",
    run_dir: Path | None = None,
    augment: bool = False,
    seed: int = SEED,
    verbose: int | str = "auto",
    jit: bool = False,
    backup_every: int | None = None,
) -> dict:
    """Trains on `data`'s training split, selects on validation, reports on test.

    For the DSN `epochs` counts refinement epochs per module, or is a list of one per module.
    """
    epochs = epochs or default_epochs(model_name)
    keras.utils.set_random_seed(seed)
    dataset = image_data.load_image_dataset(data)
    strategy = runner.choose_strategy(strategy_name)
    run_dir = runner.worker_run_dir(Path(run_dir or default_run_dir(model_name)), strategy)
    global_batch = batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = -(-count(dataset.train) // global_batch)

    resumed = runner.start_run(run_dir)
    runner.write_json(
        run_dir / "run.json",
        {"app": APP, "model": model_name, "data": data, "class_names": dataset.class_names,
         "epochs": epochs, "batch_size": batch_size, "augment": augment, "seed": seed,
         "replicas": strategy.num_replicas_in_sync, "global_batch_size": global_batch},
    )

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return image_data.batches(dataset.train, global_batch, shuffle=True, augment=augment,
                                  seed=seed + epoch)

    validation_batches = image_data.batches(dataset.validation, global_batch)
    with strategy.scope():
        model = build_model(model_name, dataset.num_classes)
        if model_name == "dsn":
            undistorted = image_data.batches(dataset.train, global_batch) if augment else None
            train_dsn(model, epoch_batches(0), validation_batches, dataset.num_classes, epochs,
                      run_dir, verbose, undistorted)
        else:
            if model_name == "dbn" and resumed is None:
                pretrain_dbn(model, epoch_batches(0), run_dir, verbose)
            compile_model(model, steps=epochs * steps_per_epoch, model_name=model_name)
    steps = None
    if model_name != "dsn":
        steps = runner.fit(
            model, epoch_batches, epochs, run_dir, steps_per_epoch=steps_per_epoch,
            validation_data=validation_batches,
            callbacks=runner.training_callbacks(run_dir, resumed=resumed is not None),
            backup_every=backup_every, jit=jit, verbose=verbose,
        )
    runner.plot_history(run_dir)
    best_model, _ = load_run(run_dir)
    metrics = held_out_metrics(best_model, dataset, run_dir, model_name) | {"steps": steps}
    runner.write_json(run_dir / "metrics.json", metrics)
    print(
        f"{APP} {model_name} on {dataset.name}: test accuracy {metrics['test_accuracy']:.4f}"
        f" ({metrics['test_examples']} images), run directory {run_dir}"
    )
    return metrics


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> tuple[keras.Model, dict]:
    checkpoint = run_dir / "best.keras"
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir}: no trained model (best.keras); run `train` first")
    # Not compiled: what reads a finished run only predicts.
    model = keras.saving.load_model(checkpoint, compile=False)
    return model, json.loads((run_dir / "run.json").read_text())


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
    run_dir = Path(run_dir or default_run_dir(DEFAULT_MODEL))
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
    """Reads the digits in each image file: a string, and a confidence per digit."""
    run_dir = Path(run_dir or default_run_dir(DEFAULT_MODEL))
    grays = [digit_frames.read_grayscale(Path(f)) for f in files]  # all checked up front
    model, run = load_run(run_dir)
    class_names = run["class_names"]
    results = []
    for path, gray in zip(files, grays):
        crops = digit_frames.segment_digits(gray)
        if not crops:
            results.append({"file": str(path), "text": "", "digits": [], "confidences": []})
            continue
        frames = np.stack([image_data.mnist_normalize(crop).numpy() for crop in crops])
        probabilities = model.predict(image_data.to_model_input(frames), verbose=0)
        best = probabilities.argmax(axis=1)
        digits = [class_names[i] for i in best]
        results.append({
            "file": str(path),
            "text": "".join(digits),
            "digits": digits,
            "confidences": [float(p) for p in probabilities.max(axis=1)],
        })
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


def tflite_predictions(content: bytes, images: np.ndarray) -> np.ndarray:
    """Class indices from a .tflite model run in the LiteRT interpreter, 256 images a call."""
    litert = LiteRTModel(content).signature(TFLITE_SIGNATURE)
    return np.concatenate([
        litert(pixels=images[start : start + 256])["probabilities"].argmax(axis=1)
        for start in range(0, len(images), 256)
    ])


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's best model as the next version under `model_base/digit_ocr/`."""
    run_dir = Path(run_dir or default_run_dir(DEFAULT_MODEL))
    model, run = load_run(run_dir)
    dataset = image_data.load_image_dataset(run["data"])
    test_images, test_labels = image_data.labelled_arrays(dataset.test)
    calibration, _ = image_data.labelled_arrays(dataset.train.take(REPRESENTATIVE_IMAGES))
    keras_predicted = model.predict(test_images, batch_size=256, verbose=0).argmax(axis=1)
    keras_accuracy = float((keras_predicted == test_labels).mean())
    report = {"keras": {"accuracy": keras_accuracy}, "test_examples": int(len(test_labels))}

    def write(version_dir: Path) -> None:
        serving_archive(model).write_out(str(version_dir), verbose=False)
        extra = version_dir / exporting.EXTRA_DIR
        extra.mkdir()
        (extra / "labels.txt").write_text("\n".join(run["class_names"]) + "\n")
        # What `python -m serving.litert` needs to read image files with these models.
        runner.write_json(extra / "litert.json", {
            "signature": TFLITE_SIGNATURE, "input": "pixels", "output": "probabilities",
            "labels": "labels.txt", "preprocess": "mnist_digits",
        })
        for variant in tqdm(exporting.TFLITE_VARIANTS, desc="TFLite", disable=quiet):
            content = exporting.convert_to_tflite(
                version_dir, TFLITE_SIGNATURE, variant, (x[None] for x in calibration)
            )
            path = extra / f"{APP}_{variant}.tflite"
            path.write_bytes(content)
            predicted = tflite_predictions(content, test_images)
            report[variant] = {
                "file": path.name,
                "bytes": len(content),
                "accuracy": float((predicted == test_labels).mean()),
                "agreement_with_keras": float((predicted == keras_predicted).mean()),
            }
        runner.write_json(extra / "tflite_report.json", report)

    version_dir = exporting.publish(Path(model_base) / APP, write)
    report["saved_model"] = str(version_dir)
    if not quiet:
        runner.print_table(
            [{"format": "Keras", "file": "best.keras", "size (KiB)": "",
              "test accuracy": f"{keras_accuracy:.4f}", "same class as Keras": ""}]
            + [{"format": f"TFLite {v}", "file": report[v]["file"],
                "size (KiB)": f"{report[v]['bytes'] / 1024:.1f}",
                "test accuracy": f"{report[v]['accuracy']:.4f}",
                "same class as Keras": f"{report[v]['agreement_with_keras']:.2%}"}
               for v in exporting.TFLITE_VARIANTS]
        )
        print(f"\nSavedModel and .tflite files in {version_dir}")
    return report


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the default schedule on the embedded digits, then export."""
    metrics = train(verbose=2)
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "digit OCR (LeNet-5)",
        "quality": f"test accuracy {metrics['test_accuracy']:.2%} ({metrics['test_examples']}"
                   " held-out digits)",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": "/".join(
            f"{report[v]['bytes'] / 1024:.0f}" for v in exporting.TFLITE_VARIANTS
        ),
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
        sub.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                         help="default: %(default)s")
        sub.add_argument("--run-dir", type=Path,
                         help="run directory (default: runs/digit_ocr/<model>)")
        return sub

    train_parser = with_run_options(commands.add_parser("train", help="train a model"))
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="digits (embedded, default), a folder of MNIST IDX files, tfds:NAME,"
             " or a folder of one subfolder of images per class",
    )
    train_parser.add_argument("--augment", action="store_true",
                              help="light random shifts, rotations and zooms while training")
    train_parser.add_argument("--seed", type=int, default=SEED)
    train_parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                              help="Keras fit output: 0 silent, 1 progress bar, 2 a line per epoch")
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
    run_dir = args.run_dir or default_run_dir(args.model)
    if args.command == "train":
        runner.configure(args)
        train(args.data, args.model, args.epochs, args.batch_size, args.strategy, run_dir,
              args.augment, args.seed, args.verbose, args.jit, args.backup_every)
    elif args.command == "evaluate":
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
