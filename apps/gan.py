"""Image generation with GANs: a DCGAN and a conditional GAN that measure themselves.

    python -m apps.gan train                           # DCGAN on the embedded digits
    python -m apps.gan train --model cgan --data ../shared/data/mnist --epochs 5
    python -m apps.gan evaluate --model cgan           # Frechet distance, label accuracy, coverage
    python -m apps.gan generate --model cgan --digit 3 --count 100 --output threes/
    python -m apps.gan export --model cgan             # -> saved_models/gan_cgan/<version>/

A generative adversarial network (Goodfellow et al., 2014) trains two networks against each
other. The generator G turns a noise vector z ~ N(0, I) into an image; the discriminator D reads
an image and says how likely it is to be real. D learns to tell the training images from G's;
G learns to make D call its images real. We use the "non-saturating" loss of the paper: G
maximises log D(G(z)) rather than minimising log(1 - D(G(z))), which gives it strong gradients
early on, when D rejects everything it draws.

DCGAN (Radford, Metz & Chintala, 2016) is the set of architecture guidelines that made this
train reliably on images, and that we follow:

    generator      z [100] -Dense-> 7x7x128 -ConvT 4x4 /2-> 14x14x64 -ConvT 4x4 /2-> 28x28x1 (tanh)
    discriminator  28x28x1 -Conv 4x4 /2-> 14x14x64 -Conv 4x4 /2-> 7x7x128 -> flatten -> 1 logit

- strided (transposed) convolutions instead of pooling, so both nets learn their own resampling;
- batch normalisation in both nets, except the generator's output and the discriminator's input;
- ReLU in the generator (tanh on the output, images scaled to [-1, 1]), LeakyReLU(0.2) in the
  discriminator;
- Adam with learning rate 2e-4 and beta_1 = 0.5, weights drawn from N(0, 0.02).

The conditional GAN (Mirza & Osindero, 2014) gives both networks the class label y, so that one
can ask for a digit. The generator reads [z, embedding(y)]. The discriminator uses the projection
of Miyato & Koyama (2018): logit = w . phi(x) + embedding(y) . phi(x), where phi(x) are its
convolutional features; an image is judged real *for its label*, which ties the digit drawn to the
digit asked for more tightly than feeding y as an extra input channel.

Pictures alone cannot tell a working GAN from a collapsed one, so `evaluate` measures:
1. the Frechet distance (the FID of Heusel et al., 2017, with LeNet-5's 84 F6 features in place of
   Inception's) between generated and real test images, beside the same distance between two
   halves of the real test set (the floor a perfect generator reaches) and for an untrained
   generator (the ceiling);
2. for the cGAN, the share of generated images that LeNet-5 reads as the digit asked for;
3. mode coverage: how many of the 10 classes LeNet-5 finds among 1,000 unconditional samples.
The LeNet-5 is `apps.digit_ocr`'s, trained on the same data.
"""

import argparse
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops
from tqdm import tqdm

from apps import digit_ocr, runner
from apps.runner import UsageError
from pipelines import DataError
from pipelines import images as image_data
from serving import export as exporting
from serving.litert import LiteRTModel

APP = "gan"
MODELS = ("dcgan", "cgan")
DEFAULT_MODEL = "dcgan"
DEFAULT_DATA = "digits"
DEMO_EPOCHS = 30  # `make demo`: the cGAN, under 2 minutes on 2 cores with evaluation and export
EPOCHS = 60  # on the embedded digits: 19 steps an epoch, about a minute and a half on 2 cores
BATCH_SIZE = 64  # per replica
LATENT_DIM = 100  # Radford et al.'s z
FILTERS = 64  # the generator's last and the discriminator's first convolution; the other is 2x
LABEL_EMBEDDING = 50  # the cGAN generator's label embedding, concatenated to z
LEARNING_RATE = 2e-4  # per replica: N replicas train at N times this (runner.scaled_learning_rate)
BETA_1 = 0.5  # Adam's default 0.9 made DCGAN training oscillate (Radford et al., section 4)
LEAKY_SLOPE = 0.2
INIT_STDDEV = 0.02
SEED = 42
STEPS_PER_EXECUTION = 8  # several steps per call into the graph when on one device

IMAGE_SIZE = 28  # the MNIST frame; images in [-1, 1], the range of the generator's tanh
GRID_ROWS = 10  # the fixed-noise sample sheet: 10 x 10 images (cGAN: one row per digit)
EVALUATION_SAMPLES = 1_000
COVERAGE_MIN_SHARE = 0.025  # a class counts as covered with a quarter of its fair 10% share
EVALUATOR_EPOCHS = {"small": 30, "large": 8}  # LeNet-5: <= 10,000 training images, or more
EVALUATION_SEED = 2024
MODEL_BASE = Path("saved_models")


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


def check_model(model_name: str) -> None:
    if model_name not in MODELS:
        raise UsageError(f"--model {model_name}: choose from {', '.join(MODELS)}")


# ---------------------------------------------------------------------------------------------
# Images: uint8 MNIST frames <-> the generator's [-1, 1]
# ---------------------------------------------------------------------------------------------


def to_gan_input(frames: tf.Tensor) -> tf.Tensor:
    """uint8 [..., 28, 28, 1] -> float32 in [-1, 1]."""
    return tf.cast(frames, tf.float32) / 127.5 - 1.0


def to_frames(images):
    """Generator output in [-1, 1] -> uint8 [..., 28, 28, 1]; numpy in, numpy out, else tensors."""
    if isinstance(images, np.ndarray):
        return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def gan_batches(split: tf.data.Dataset, global_batch: int, seed: int = SEED) -> tf.data.Dataset:
    """An unbatched split -> shuffled batches of (float32 [B, 28, 28, 1] in [-1, 1], int32 [B]).

    Full batches only: every replica then gets the same share, and the noise each one slices out
    of the global draw (see `GAN.draw_noise`) is exactly what one device would use. One pipeline
    per epoch, shuffled by `seed`: training passes `SEED + epoch`, so every process (a re-run
    resuming mid-epoch, every worker) sees the same batches in the same order.
    """
    return (
        split.cache()
        .shuffle(10_000, seed=seed, reshuffle_each_iteration=False)
        .batch(global_batch, drop_remainder=True)
        .map(lambda frames, labels: (to_gan_input(frames), labels),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


# ---------------------------------------------------------------------------------------------
# The two networks
# ---------------------------------------------------------------------------------------------


def init():
    return keras.initializers.RandomNormal(stddev=INIT_STDDEV)


def batch_norm(name: str) -> layers.BatchNormalization:
    # Synchronised under MirroredStrategy: the statistics are those of the global batch, so N
    # replicas compute what one device computes on the same batch. Not on one device, where the
    # all-reduce path doubles the training time for nothing.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return layers.BatchNormalization(synchronized=replicas > 1, name=name)


def build_generator(model_name: str, num_classes: int = 10, filters: int = FILTERS,
                    latent_dim: int = LATENT_DIM) -> keras.Model:
    """z [latent_dim] (and, for the cGAN, a label) -> image [28, 28, 1] in [-1, 1]."""
    check_model(model_name)
    noise = keras.Input((latent_dim,), name="noise")
    inputs, x = [noise], noise
    if model_name == "cgan":
        label = keras.Input((), dtype="int32", name="label")
        inputs.append(label)
        embedded = layers.Embedding(num_classes, LABEL_EMBEDDING, name="label_embedding")(label)
        x = layers.Concatenate(name="z_and_label")([noise, embedded])
    x = layers.Dense(7 * 7 * 2 * filters, use_bias=False, kernel_initializer=init(),
                     name="project")(x)
    x = layers.ReLU()(batch_norm("project_bn")(x))
    x = layers.Reshape((7, 7, 2 * filters))(x)  # 7x7x2f
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False,
                               kernel_initializer=init(), name="up1")(x)  # 14x14xf
    x = layers.ReLU()(batch_norm("up1_bn")(x))
    images = layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="tanh",
                                    kernel_initializer=init(), name="up2")(x)  # 28x28x1
    return keras.Model(inputs if model_name == "cgan" else noise, images,
                       name=f"{model_name}_generator")


def build_discriminator(model_name: str, num_classes: int = 10,
                        filters: int = FILTERS) -> keras.Model:
    """image [28, 28, 1] (and, for the cGAN, its label) -> one logit: real (>0) or generated."""
    check_model(model_name)
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    # No batch norm on the first layer: normalising the raw pixels made DCGAN unstable.
    x = layers.Conv2D(filters, 4, strides=2, padding="same", kernel_initializer=init(),
                      name="down1")(image)  # 14x14xf
    x = layers.LeakyReLU(LEAKY_SLOPE)(x)
    x = layers.Conv2D(2 * filters, 4, strides=2, padding="same", use_bias=False,
                      kernel_initializer=init(), name="down2")(x)  # 7x7x2f
    x = layers.LeakyReLU(LEAKY_SLOPE)(batch_norm("down2_bn")(x))
    features = layers.Flatten(name="features")(x)  # phi(x): [7*7*2f]
    logit = layers.Dense(1, kernel_initializer=init(), name="logit")(features)
    if model_name == "dcgan":
        return keras.Model(image, logit, name="dcgan_discriminator")
    label = keras.Input((), dtype="int32", name="label")
    embedded = layers.Embedding(num_classes, features.shape[-1], name="label_projection")(label)
    projection = layers.Dot(axes=1, name="projection")([embedded, features])  # [B, 1]
    logit = layers.Add(name="conditional_logit")([logit, projection])
    return keras.Model([image, label], logit, name="cgan_discriminator")


# ---------------------------------------------------------------------------------------------
# The adversarial game as a keras.Model: fit, callbacks, backups and strategies work
# ---------------------------------------------------------------------------------------------


def bce(target: float, logits):
    """Mean binary cross-entropy of D's logits against one target: 1 real, 0 generated."""
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits,
                                            from_logits=True))


class GAN(keras.Model):
    """Holds G and D; `train_step` plays one round: a step of D, then a step of G."""

    def __init__(self, generator: keras.Model, discriminator: keras.Model, conditional: bool,
                 seed: int = SEED, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.conditional = conditional
        self.latent_dim = int(generator.inputs[0].shape[-1])
        self.seed = int(seed)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("d_loss", "g_loss", "d_real", "d_fake")}
        self.built = True  # both networks are built; nothing to infer from the data

    def compile(self, steps_per_execution: int = 1, learning_rate: float | None = None):
        """Two Adams, D's and G's. `learning_rate` (both): by default LEARNING_RATE, which is
        stated for one replica's batch, scaled to the strategy's global batch."""
        super().compile(optimizer=None, steps_per_execution=steps_per_execution)
        if learning_rate is None:
            learning_rate = runner.scaled_learning_rate(LEARNING_RATE,
                                                        tf.distribute.get_strategy())
        self.d_optimizer = keras.optimizers.Adam(learning_rate, beta_1=BETA_1, name="d_adam")
        self.g_optimizer = keras.optimizers.Adam(learning_rate, beta_1=BETA_1, name="g_adam")
        # Built here, in the strategy's scope: their slots must not be created inside a replica.
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        return self

    @property
    def metrics(self):
        return list(self.trackers.values())  # reset by fit at each epoch

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def draw_noise(self, batch, stream: int):
        """z for this replica's share of the global batch, the same numbers one device draws.

        The draw is stateless, seeded by the training step (so it changes every step, and a run
        resumed from its backup draws what the uninterrupted run would have) and by `stream`
        (the discriminator's and the generator's half of a step draw apart). Every replica
        draws the whole global batch and keeps its own slice: a `SeedGenerator` would give each
        replica the same numbers, and per-replica seeds would give other numbers than one device.
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        step = tf.cast(self.g_optimizer.iterations.value, tf.int64)
        seed = tf.stack([tf.constant(self.seed * 2 + stream, tf.int64), step])
        everyone = tf.random.stateless_normal([batch * replicas, self.latent_dim], seed=seed)
        return everyone[replica * batch : (replica + 1) * batch]

    def train_step(self, data):
        real, labels = data  # [B, 28, 28, 1] in [-1, 1], [B]
        batch = tf.shape(real)[0]
        # Keras' optimizer sums the replicas' gradients: each replica's loss is its share.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        def generate(noise):
            inputs = [noise, labels] if self.conditional else noise
            return self.generator(inputs, training=True)

        def judge(images):
            inputs = [images, labels] if self.conditional else images
            return self.discriminator(inputs, training=True)

        # Discriminator: real images -> 1, generated ones -> 0. Real and generated go through
        # D separately, so batch norm never mixes the two (Radford et al.).
        fake = generate(self.draw_noise(batch, stream=0))
        with tf.GradientTape() as tape:
            real_logits, fake_logits = judge(real), judge(fake)
            d_loss = bce(1.0, real_logits) + bce(0.0, fake_logits)
            share = d_loss / replicas
        weights = self.discriminator.trainable_variables
        gradients = tape.gradient(share, weights)
        self.d_optimizer.apply_gradients(zip(gradients, weights))

        # Generator, non-saturating: make the updated D call fresh samples real.
        with tf.GradientTape() as tape:
            g_loss = bce(1.0, judge(generate(self.draw_noise(batch, stream=1))))
            share = g_loss / replicas
        weights = self.generator.trainable_variables
        gradients = tape.gradient(share, weights)
        self.g_optimizer.apply_gradients(zip(gradients, weights))

        # d_real / d_fake: D's mean belief that real / generated images are real. Far from 0.5
        # for long means one side has won and the game has stopped teaching G.
        for name, value in (("d_loss", d_loss), ("g_loss", g_loss),
                            ("d_real", ops.mean(ops.sigmoid(real_logits))),
                            ("d_fake", ops.mean(ops.sigmoid(fake_logits)))):
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, data):
        """The same figures on held-out images, no weights updated. A validation d_real well
        below the training one means D memorises the training images instead of learning digits.

        G draws as it will when deployed (inference mode, moving statistics). D judges as it
        does in training, with batch statistics: its moving averages, never used elsewhere, mix
        real-only and generated-only batches and would make it judge a different game.
        """
        real, labels = data
        noise = self.draw_noise(tf.shape(real)[0], stream=2)  # one draw for the whole epoch
        if self.conditional:
            fake = self.generator([noise, labels], training=False)
            real_logits = self.discriminator([real, labels], training=True)
            fake_logits = self.discriminator([fake, labels], training=True)
        else:
            fake = self.generator(noise, training=False)
            real_logits = self.discriminator(real, training=True)
            fake_logits = self.discriminator(fake, training=True)
        figures = {
            "d_loss": bce(1.0, real_logits) + bce(0.0, fake_logits),
            "g_loss": bce(1.0, fake_logits),
            "d_real": ops.mean(ops.sigmoid(real_logits)),
            "d_fake": ops.mean(ops.sigmoid(fake_logits)),
        }
        for name, value in figures.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def build_gan(model_name: str, num_classes: int = 10, filters: int = FILTERS,
              seed: int = SEED) -> GAN:
    return GAN(build_generator(model_name, num_classes, filters),
               build_discriminator(model_name, num_classes, filters),
               conditional=model_name == "cgan", seed=seed, name=model_name)


# ---------------------------------------------------------------------------------------------
# Sampling and sample sheets
# ---------------------------------------------------------------------------------------------


def infer(model: keras.Model, inputs, batch_size: int = 500) -> np.ndarray:
    """`model` in inference mode on numpy inputs, a chunk at a time. Plain calls rather than
    `predict`, whose graph is traced again for every new input size."""
    inputs = inputs if isinstance(inputs, list) else [inputs]
    outputs = []
    for start in range(0, len(inputs[0]), batch_size):
        chunk = [x[start : start + batch_size] for x in inputs]
        outputs.append(model(chunk if len(chunk) > 1 else chunk[0], training=False))
    return np.concatenate([ops.convert_to_numpy(output) for output in outputs])


def sample_frames(generator: keras.Model, noise: np.ndarray,
                  labels: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, 28, 28, 1] images from `generator` (inference mode) for the given z (and y)."""
    conditional = len(generator.inputs) == 2
    if conditional and labels is None:
        raise UsageError("a conditional generator needs labels")
    inputs = [noise, labels.astype(np.int32)] if conditional else noise
    return to_frames(infer(generator, inputs))


def sheet(frames: np.ndarray, columns: int, scale: int = 2, gap: int = 2) -> np.ndarray:
    """uint8 frames [N, 28, 28, 1] tiled in rows of `columns`, grey gaps, enlarged `scale`x."""
    rows = -(-len(frames) // columns)
    cell = IMAGE_SIZE + gap
    canvas = np.full((rows * cell + gap, columns * cell + gap), 96, dtype=np.uint8)
    for i, frame in enumerate(frames):
        top, left = gap + (i // columns) * cell, gap + (i % columns) * cell
        canvas[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE] = frame[..., 0]
    return np.kron(canvas, np.ones((scale, scale), dtype=np.uint8))


def write_png(pixels: np.ndarray, path: Path) -> None:
    """A grey PNG written under a temporary name and renamed: never half a file at `path`."""
    from PIL import Image

    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(pixels).save(partial, format="PNG")
    os.replace(partial, path)


def fixed_grid_inputs(conditional: bool, latent_dim: int = LATENT_DIM):
    """The sample sheet's z (and y): the same every epoch, so the PNGs show training progress.
    cGAN: row r asks for digit r, and each column keeps its z across rows (one style per column)."""
    rng = np.random.default_rng(SEED)
    if not conditional:
        return rng.standard_normal((GRID_ROWS * GRID_ROWS, latent_dim)).astype(np.float32), None
    styles = rng.standard_normal((GRID_ROWS, latent_dim)).astype(np.float32)
    return np.tile(styles, (GRID_ROWS, 1)), np.repeat(np.arange(GRID_ROWS), GRID_ROWS)


class EpochSamples(keras.callbacks.Callback):
    """After each epoch: samples/epoch_NNN.png from fixed noise, and the generator saved as
    generator.keras (the last trained model is what `generate`, `evaluate` and `export` use)."""

    def __init__(self, run_dir: Path, conditional: bool):
        super().__init__()
        self.run_dir = run_dir
        self.noise, self.labels = fixed_grid_inputs(conditional)

    def on_epoch_end(self, epoch, logs=None):
        generator = self.model.generator
        frames = sample_frames(generator, self.noise, self.labels)
        (self.run_dir / "samples").mkdir(exist_ok=True)
        write_png(sheet(frames, GRID_ROWS), self.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
        partial = self.run_dir / ".generator.partial.keras"  # `save` wants the .keras suffix
        generator.save(partial)
        os.replace(partial, self.run_dir / "generator.keras")


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(
    data: str = DEFAULT_DATA,
    model_name: str = DEFAULT_MODEL,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    strategy_name: str = "auto",
    run_dir: Path | None = None,
    filters: int = FILTERS,
    seed: int = SEED,
    evaluator: Path | None = None,
    verbose: int | str = "auto",
    jit: bool = False,
    backup_every: int | None = None,
) -> dict:
    """Trains G and D on `data`'s training split, then evaluates G against the test split."""
    check_model(model_name)
    keras.utils.set_random_seed(seed)
    dataset = image_data.load_image_dataset(data)
    strategy = runner.choose_strategy(strategy_name)
    run_dir = runner.worker_run_dir(Path(run_dir or default_run_dir(model_name)), strategy)
    global_batch = batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = image_data.count(dataset.train) // global_batch  # full batches only
    if steps_per_epoch == 0:
        raise UsageError(f"--batch-size {batch_size}: the global batch of {global_batch} is"
                         f" larger than the {image_data.count(dataset.train)} training images")
    if evaluator is not None:
        check_evaluator(Path(evaluator), data)  # before minutes of training, not after

    resumed = runner.start_run(run_dir)
    if resumed is None:  # a fresh run: drop the samples and generator of an earlier one
        for leftover in sorted((run_dir / "samples").glob("*.png")):
            leftover.unlink()
        for name in ("generator.keras", "samples.png", "evaluation.json"):
            (run_dir / name).unlink(missing_ok=True)
    runner.write_json(
        run_dir / "run.json",
        {"app": APP, "model": model_name, "data": data, "class_names": dataset.class_names,
         "epochs": epochs, "batch_size": batch_size, "filters": filters,
         "latent_dim": LATENT_DIM, "seed": seed, "replicas": strategy.num_replicas_in_sync,
         "global_batch_size": global_batch,
         "evaluator": str(evaluator) if evaluator is not None else None},
    )

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return gan_batches(dataset.train, global_batch, seed + epoch)

    with strategy.scope():
        gan = build_gan(model_name, dataset.num_classes, filters, seed)
        # Keras 3.15's multi-step loop fails under MirroredStrategy: one step per call there.
        # (Backups then fall every STEPS_PER_EXECUTION steps at most: see apps.backup.)
        gan.compile(STEPS_PER_EXECUTION if strategy.num_replicas_in_sync == 1 else 1)
    # The history row and the sample sheet / generator are written before the backup that says
    # the epoch is done (runner.fit puts it after these callbacks).
    callbacks = [
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        EpochSamples(run_dir, conditional=model_name == "cgan"),
        keras.callbacks.TensorBoard(str(run_dir / "logs")),
    ]
    steps = runner.fit(
        gan, epoch_batches, epochs, run_dir, steps_per_epoch=steps_per_epoch,
        validation_data=gan_batches(dataset.validation, global_batch, seed),
        callbacks=callbacks, backup_every=backup_every, jit=jit, verbose=verbose,
    )
    runner.plot_history(run_dir)
    noise, labels = fixed_grid_inputs(model_name == "cgan")
    write_png(sheet(sample_frames(gan.generator, noise, labels), GRID_ROWS),
              run_dir / "samples.png")

    figures = evaluate(run_dir, evaluator=evaluator, quiet=True) | {"steps": steps}
    runner.write_json(run_dir / "metrics.json", figures)
    print(f"{APP} {model_name} on {dataset.name}: {summary(figures)}; run directory {run_dir}")
    return figures


# ---------------------------------------------------------------------------------------------
# evaluate: Frechet distance in LeNet-5's feature space, label accuracy, mode coverage
# ---------------------------------------------------------------------------------------------


def load_generator(run_dir: Path) -> tuple[keras.Model, dict]:
    checkpoint = run_dir / "generator.keras"
    if not checkpoint.is_file():
        raise UsageError(f"{run_dir}: no trained generator (generator.keras); run `train` first")
    return keras.saving.load_model(checkpoint), json.loads((run_dir / "run.json").read_text())


def check_evaluator(evaluator_dir: Path, data: str) -> None:
    """A digit OCR run given as the evaluator must exist and have been trained on `data`."""
    run_file = evaluator_dir / "run.json"
    if not (evaluator_dir / "best.keras").is_file() or not run_file.is_file():
        raise UsageError(f"--evaluator {evaluator_dir}: not a trained apps.digit_ocr run")
    trained_on = json.loads(run_file.read_text())["data"]
    if trained_on != data:
        raise UsageError(
            f"--evaluator {evaluator_dir}: its LeNet was trained on {trained_on}, the GAN on {data}"
        )


def evaluator_lenet(run_dir: Path, data: str, evaluator: Path | None,
                    train_size: int) -> tuple[keras.Model, Path]:
    """The LeNet-5 that judges the generator: the given digit OCR run, else `run_dir/evaluator`,
    trained there (classic LeNet-5 by `apps.digit_ocr`) on the GAN's data when missing."""
    if evaluator is not None:
        check_evaluator(Path(evaluator), data)
        return digit_ocr.load_run(Path(evaluator))[0], Path(evaluator)
    own = run_dir / "evaluator"
    try:
        check_evaluator(own, data)
    except UsageError:
        epochs = EVALUATOR_EPOCHS["small" if train_size <= 10_000 else "large"]
        print(f"Training the evaluator LeNet-5 on {data} ({epochs} epochs) in {own}")
        digit_ocr.train(digit_ocr.TrainConfig(data=data, epochs=epochs, run_dir=own,
                                              verbose=0))
    return digit_ocr.load_run(own)[0], own


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two sets
    of feature vectors [N, D] (Heusel et al., 2017)."""
    from scipy import linalg

    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # near-singular product: nudge both, as the FID code does
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    distance = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root.real)
    return float(max(distance, 0.0))


def mode_coverage(predicted: np.ndarray, num_classes: int = 10) -> dict:
    """How many classes a set of samples covers: those holding at least COVERAGE_MIN_SHARE of
    the samples. A GAN that collapsed onto a few digits covers few, whatever else it draws."""
    counts = np.bincount(predicted, minlength=num_classes)
    covered = int((counts >= COVERAGE_MIN_SHARE * len(predicted)).sum())
    return {"covered": covered, "classes": num_classes, "samples": int(len(predicted)),
            "counts": counts.tolist(), "passed": covered == num_classes}


class Judge:
    """LeNet-5 as the judge: F6 features (84, the penultimate layer) and class predictions."""

    def __init__(self, lenet: keras.Model):
        self.classifier = lenet
        self.features = keras.Model(lenet.input, lenet.get_layer("F6").output)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        pixels = image_data.to_model_input(frames).numpy()
        return infer(self.features, pixels)

    def classify(self, frames: np.ndarray) -> np.ndarray:
        pixels = image_data.to_model_input(frames).numpy()
        return infer(self.classifier, pixels).argmax(axis=1)


def unconditional_frames(generator: keras.Model, count: int, num_classes: int,
                         rng: np.random.Generator) -> np.ndarray:
    """What the generator draws when nobody asks for a digit (cGAN: uniformly random labels)."""
    noise = rng.standard_normal((count, generator.inputs[0].shape[-1])).astype(np.float32)
    labels = rng.integers(0, num_classes, count) if len(generator.inputs) == 2 else None
    return sample_frames(generator, noise, labels)


def evaluate(run_dir: Path | None = None, model_name: str = DEFAULT_MODEL,
             evaluator: Path | None = None, samples: int = EVALUATION_SAMPLES,
             quiet: bool = False) -> dict:
    """The generator of a run against the test split of its data; evaluation.json and a table."""
    run_dir = Path(run_dir or default_run_dir(model_name))
    generator, run = load_generator(run_dir)
    if samples < 100:
        raise UsageError(f"--samples {samples}: at least 100, ten or more per class")
    if evaluator is None and run.get("evaluator"):
        evaluator = Path(run["evaluator"])
    dataset = image_data.load_image_dataset(run["data"])
    train_size = image_data.count(dataset.train)
    lenet, evaluator_dir = evaluator_lenet(run_dir, run["data"], evaluator, train_size)
    judge = Judge(lenet)
    num_classes, latent_dim = dataset.num_classes, run["latent_dim"]
    rng = np.random.default_rng(EVALUATION_SEED)

    # The real test split, as uint8 frames, in two halves: A is the reference, B the real
    # images a perfect generator would be indistinguishable from.
    frames, labels = [], []
    for batch, label_batch in dataset.test.batch(1024):
        frames.append(batch.numpy())
        labels.append(label_batch.numpy())
    frames, labels = np.concatenate(frames), np.concatenate(labels)
    reference = judge.embed(frames[0::2])
    real_b, labels_b = frames[1::2], labels[1::2]

    def frechet(model: keras.Model) -> float:  # as many samples as half B, with B's labels
        noise = rng.standard_normal((len(real_b), latent_dim)).astype(np.float32)
        return frechet_distance(judge.embed(sample_frames(model, noise, labels_b)), reference)

    keras.utils.set_random_seed(EVALUATION_SEED)  # the same untrained weights every time
    untrained = build_generator(run["model"], num_classes, run["filters"])
    figures = {
        "model": run["model"],
        "data": run["data"],
        "evaluator": str(evaluator_dir),
        "evaluator_test_accuracy": float((judge.classify(frames) == labels).mean()),
        "frechet_lenet": frechet(generator),
        "frechet_floor_real_vs_real": frechet_distance(judge.embed(real_b), reference),
        "frechet_untrained_generator": frechet(untrained),
        "frechet_images_per_set": int(len(real_b)),
    }
    if run["model"] == "cgan":
        asked = np.arange(samples) % num_classes
        noise = rng.standard_normal((samples, latent_dim)).astype(np.float32)
        read = judge.classify(sample_frames(generator, noise, asked))
        figures["label_accuracy"] = float((read == asked).mean())
        figures["label_accuracy_per_class"] = {
            name: float((read[asked == c] == c).mean())
            for c, name in enumerate(dataset.class_names)
        }
    predicted = judge.classify(unconditional_frames(generator, samples, num_classes, rng))
    figures["mode_coverage"] = mode_coverage(predicted, num_classes)
    runner.write_json(run_dir / "evaluation.json", figures)
    if not quiet:
        print_figures(figures, dataset.class_names)
        print(f"\nJSON in {run_dir / 'evaluation.json'}")
    return figures


def summary(figures: dict) -> str:
    text = (f"Frechet distance (LeNet) {figures['frechet_lenet']:.2f} (real-vs-real floor"
            f" {figures['frechet_floor_real_vs_real']:.2f}, untrained generator"
            f" {figures['frechet_untrained_generator']:.1f})")
    if "label_accuracy" in figures:
        text += f", label accuracy {figures['label_accuracy']:.1%}"
    coverage = figures["mode_coverage"]
    return text + f", mode coverage {coverage['covered']}/{coverage['classes']}"


def print_figures(figures: dict, class_names: list[str]) -> None:
    coverage = figures["mode_coverage"]
    per_set = figures["frechet_images_per_set"]
    rows = [
        {"figure": "Frechet distance, LeNet F6 features", "value":
         f"{figures['frechet_lenet']:.2f}", "note": f"generated vs real test, {per_set} each"},
        {"figure": "  floor: real vs real", "value":
         f"{figures['frechet_floor_real_vs_real']:.2f}", "note": "two halves of the test split"},
        {"figure": "  ceiling: untrained generator", "value":
         f"{figures['frechet_untrained_generator']:.2f}", "note": "same architecture, not trained"},
    ]
    if "label_accuracy" in figures:
        rows.append({"figure": "label accuracy (cGAN)", "value":
                     f"{figures['label_accuracy']:.1%}", "note": "generated images LeNet-5 reads"
                     " as the digit asked for (chance 10%)"})
    rows += [
        {"figure": "mode coverage", "value": f"{coverage['covered']}/{coverage['classes']}",
         "note": f"classes with >= {COVERAGE_MIN_SHARE:.1%} of {coverage['samples']} samples: "
                 + ("passed" if coverage["passed"] else "FAILED (collapsed modes)")},
        {"figure": "evaluator LeNet-5 on real test", "value":
         f"{figures['evaluator_test_accuracy']:.1%}", "note": figures["evaluator"]},
    ]
    runner.print_table(rows)
    counts = coverage["counts"]
    print("\nsamples per class: " + "  ".join(f"{n}:{c}" for n, c in zip(class_names, counts)))


# ---------------------------------------------------------------------------------------------
# generate: PNG files from the last trained generator
# ---------------------------------------------------------------------------------------------


def generate(output: Path, model_name: str = DEFAULT_MODEL, count: int = 100,
             digit: int | None = None, grid: bool = False, run_dir: Path | None = None,
             seed: int | None = None) -> list[Path]:
    """Draws `count` images (cGAN: of `digit`, or of every digit in turn) into `output`: one PNG
    per image, or one sheet with `grid`. Returns the files written."""
    if count < 1:
        raise UsageError(f"--count {count}: must be at least 1")
    if digit is not None and model_name != "cgan":
        raise UsageError(f"--digit needs --model cgan; {model_name} draws no chosen digit")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output}: exists and is not a folder")
    generator, run = load_generator(Path(run_dir or default_run_dir(model_name)))
    class_names = run["class_names"]
    if digit is not None and not 0 <= digit < len(class_names):
        raise UsageError(f"--digit {digit}: the model knows classes 0 to {len(class_names) - 1}")

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, generator.inputs[0].shape[-1])).astype(np.float32)
    labels = None
    if run["model"] == "cgan":
        labels = np.full(count, digit) if digit is not None else np.arange(count) % len(class_names)
    frames = sample_frames(generator, noise, labels)

    output.mkdir(parents=True, exist_ok=True)
    stem = run["model"] + (f"_{class_names[digit]}" if digit is not None else "")
    if grid:
        path = output / f"{stem}_grid.png"
        write_png(sheet(frames, GRID_ROWS, scale=1), path)
        return [path]
    paths = []
    for i, frame in enumerate(tqdm(frames, desc="PNG", disable=count < 500)):
        name = stem if labels is None or digit is not None else f"{stem}_{class_names[labels[i]]}"
        paths.append(output / f"{name}_{i:04d}.png")
        write_png(frame[..., 0], paths[-1])
    return paths


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------

TFLITE_VARIANTS = ("float32", "float16")  # int8 would need a calibrated noise range; not here
CHECK_SAMPLES = 64  # generated with the same z by Keras and by each .tflite file


def serving_archive(generator: keras.Model, conditional: bool) -> keras.export.ExportArchive:
    """`serving_default`: noise (and label) -> uint8 images; `generate_png`: -> PNG bytes."""
    archive = keras.export.ExportArchive()
    archive.track(generator)
    latent_dim = generator.inputs[0].shape[-1]
    noise_spec = tf.TensorSpec([None, latent_dim], tf.float32, name="noise")
    label_spec = tf.TensorSpec([None], tf.int32, name="label")

    def draw(noise, label=None):
        inputs = [noise, label] if conditional else noise
        return to_frames(generator(inputs, training=False))  # uint8 [N, 28, 28, 1]

    def pngs(frames):
        return tf.map_fn(tf.io.encode_png, frames, fn_output_signature=tf.string)

    # The server sends outputs named *_bytes as {"b64": ...}, as TensorFlow Serving does.
    if conditional:
        archive.add_endpoint("serving_default", lambda noise, label: {"images": draw(noise, label)},
                             input_signature=[noise_spec, label_spec])
        archive.add_endpoint("generate_png",
                             lambda noise, label: {"png_bytes": pngs(draw(noise, label))},
                             input_signature=[noise_spec, label_spec])
    else:
        archive.add_endpoint("serving_default", lambda noise: {"images": draw(noise)},
                             input_signature=[noise_spec])
        archive.add_endpoint("generate_png", lambda noise: {"png_bytes": pngs(draw(noise))},
                             input_signature=[noise_spec])
    return archive


def tflite_frames(content: bytes, noise: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    litert = LiteRTModel(content).signature("serving_default")
    inputs = {"noise": noise} if labels is None else {"noise": noise, "label": labels}
    return litert(**inputs)["images"]


def export(run_dir: Path | None = None, model_name: str = DEFAULT_MODEL,
           model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's generator as the next version under `model_base/gan_<model>/`."""
    run_dir = Path(run_dir or default_run_dir(model_name))
    generator, run = load_generator(run_dir)
    conditional = run["model"] == "cgan"
    rng = np.random.default_rng(EVALUATION_SEED)
    noise = rng.standard_normal((CHECK_SAMPLES, run["latent_dim"])).astype(np.float32)
    labels = (np.arange(CHECK_SAMPLES) % len(run["class_names"])).astype(np.int32) \
        if conditional else None
    expected = sample_frames(generator, noise, labels).astype(np.int16)
    report = {"model": run["model"], "check_samples": CHECK_SAMPLES}

    def write(version_dir: Path) -> None:
        serving_archive(generator, conditional).write_out(str(version_dir), verbose=False)
        extra = version_dir / exporting.EXTRA_DIR
        extra.mkdir()
        (extra / "labels.txt").write_text("\n".join(run["class_names"]) + "\n")
        runner.write_json(extra / "generator.json", {
            "model": run["model"], "signature": "serving_default",
            "inputs": {"noise": f"float32 [N, {run['latent_dim']}], standard normal"}
            | ({"label": "int32 [N], a class index (labels.txt)"} if conditional else {}),
            "output": "images: uint8 [N, 28, 28, 1], light digit on dark",
        })
        for variant in tqdm(TFLITE_VARIANTS, desc="TFLite", disable=quiet):
            content = exporting.convert_to_tflite(version_dir, "serving_default", variant)
            path = extra / f"{APP}_{run['model']}_{variant}.tflite"
            path.write_bytes(content)
            difference = np.abs(tflite_frames(content, noise, labels).astype(np.int16) - expected)
            report[variant] = {"file": path.name, "bytes": len(content),
                               "max_abs_difference": int(difference.max()),
                               "mean_abs_difference": float(difference.mean())}
        runner.write_json(extra / "tflite_report.json", report)

    version_dir = exporting.publish(Path(model_base) / f"{APP}_{run['model']}", write)
    report["saved_model"] = str(version_dir)
    if not quiet:
        runner.print_table(
            [{"format": f"TFLite {v}", "file": report[v]["file"],
              "size (KiB)": f"{report[v]['bytes'] / 1024:.1f}",
              "grey levels off Keras (max / mean)":
                  f"{report[v]['max_abs_difference']} / {report[v]['mean_abs_difference']:.3f}"}
             for v in TFLITE_VARIANTS]
        )
        print(f"\nSavedModel and .tflite files in {version_dir}")
    return report


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the conditional GAN on the embedded digits, evaluated and exported.
    The judge is the digit OCR demo's LeNet-5 when it ran before on the same digits."""
    evaluator = digit_ocr.default_run_dir(digit_ocr.DEFAULT_MODEL)
    try:
        check_evaluator(evaluator, DEFAULT_DATA)
    except UsageError:
        evaluator = None  # trained into the run directory instead
    figures = train(model_name="cgan", epochs=DEMO_EPOCHS, evaluator=evaluator, verbose=2)
    report = export(model_name="cgan", model_base=model_base, quiet=True)
    return {
        "app": "image generation (cGAN)",
        "quality": f"label accuracy {figures['label_accuracy']:.0%}, FID-LeNet"
                   f" {figures['frechet_lenet']:.1f} (real vs real"
                   f" {figures['frechet_floor_real_vs_real']:.1f}, untrained"
                   f" {figures['frechet_untrained_generator']:.0f})",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": "/".join(
            [f"{report[v]['bytes'] / 1024:.0f}" for v in TFLITE_VARIANTS] + ["-", "-"]
        ),
    }



# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.gan",
        description="Image generation with GANs (DCGAN, conditional GAN): train, evaluate with"
                    " a Frechet distance in LeNet-5's feature space, generate PNGs, export.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_options(sub):
        sub.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                         help="dcgan: unconditional; cgan: conditioned on the digit"
                              " (default: %(default)s)")
        sub.add_argument("--run-dir", type=Path, help="run directory (default: runs/gan/<model>)")
        return sub

    evaluator_help = ("an apps.digit_ocr run directory trained on the same data whose LeNet-5"
                      " judges the images (default: <run-dir>/evaluator, trained when missing)")
    train_parser = with_run_options(commands.add_parser("train", help="train G against D"))
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="digits (embedded, default), a folder of MNIST IDX files, tfds:NAME,"
             " or a folder of one subfolder of images per class",
    )
    train_parser.add_argument("--filters", type=int, default=FILTERS,
                              help="width of both networks (default: %(default)s)")
    train_parser.add_argument("--seed", type=int, default=SEED)
    train_parser.add_argument("--evaluator", type=Path, help=evaluator_help)
    train_parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                              help="Keras fit output: 0 silent, 1 progress bar, 2 a line per epoch")
    runner.add_training_options(train_parser, EPOCHS, BATCH_SIZE)

    evaluate_parser = with_run_options(commands.add_parser(
        "evaluate", help="Frechet distance (LeNet-5), label accuracy (cGAN), mode coverage"))
    evaluate_parser.add_argument("--evaluator", type=Path, help=evaluator_help)
    evaluate_parser.add_argument("--samples", type=int, default=EVALUATION_SAMPLES,
                                 help="images drawn for label accuracy and coverage"
                                      " (default: %(default)s)")

    generate_parser = with_run_options(commands.add_parser(
        "generate", help="PNG files from the last trained generator"))
    generate_parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                                 help="folder for the PNG files (created if missing)")
    generate_parser.add_argument("--count", type=int, default=100, help="default: %(default)s")
    generate_parser.add_argument("--digit", type=int,
                                 help="cgan: the digit to draw (default: every digit in turn)")
    generate_parser.add_argument("--grid", action="store_true",
                                 help="one sheet with all the images instead of a file each")
    generate_parser.add_argument("--seed", type=int, help="noise seed (default: fresh noise)")

    export_parser = with_run_options(commands.add_parser(
        "export", help="SavedModel version + .tflite files (float32, float16)"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    run_dir = args.run_dir or default_run_dir(args.model)
    if args.command == "train":
        runner.configure(args)
        train(args.data, args.model, args.epochs, args.batch_size, args.strategy, run_dir,
              args.filters, args.seed, args.evaluator, args.verbose, args.jit, args.backup_every)
    elif args.command == "evaluate":
        evaluate(run_dir, args.model, args.evaluator, args.samples)
    elif args.command == "generate":
        paths = generate(args.output, args.model, args.count, args.digit, args.grid, run_dir,
                         args.seed)
        print(f"{len(paths)} PNG file{'s' if len(paths) > 1 else ''} in {args.output}")
    elif args.command == "export":
        export(run_dir, args.model, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
