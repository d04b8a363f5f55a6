"""DCGAN and a conditional GAN on 28x28 digits: the two networks, the adversarial game as a
`keras.Model`, sampling, the measures of a generator (Frechet distance, mode coverage, the
LeNet-5 judge) and the serving signatures.

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

`GAN` holds both networks and plays one round of the game per `train_step` (a step of D, then a
step of G), so Keras' `fit`, callbacks, step backups and distribution strategies work as for any
model. Only the generator is saved; it is a plain functional model of Keras layers.
"""

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from pipelines import images as image_data

MODELS = ("dcgan", "cgan")
LATENT_DIM = 100  # Radford et al.'s z
FILTERS = 64  # the generator's last and the discriminator's first convolution; the other is 2x
LABEL_EMBEDDING = 50  # the cGAN generator's label embedding, concatenated to z
LEARNING_RATE = 2e-4  # per replica: N replicas train at N times this (the linear scaling rule)
BETA_1 = 0.5  # Adam's default 0.9 made DCGAN training oscillate (Radford et al., section 4)
LEAKY_SLOPE = 0.2
INIT_STDDEV = 0.02
SEED = 42
IMAGE_SIZE = 28  # the MNIST frame; images in [-1, 1], the range of the generator's tanh
COVERAGE_MIN_SHARE = 0.025  # a class counts as covered with a quarter of its fair 10% share
GRID_ROWS = 10  # the fixed-noise sample sheet: 10 x 10 images (cGAN: one row per digit)


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


# ---------------------------------------------------------------------------------------------
# The two networks
# ---------------------------------------------------------------------------------------------


def check_model(model_name: str) -> None:
    if model_name not in MODELS:
        raise ValueError(f"unknown GAN {model_name!r}; choose from {', '.join(MODELS)}")


def init():
    return keras.initializers.RandomNormal(stddev=INIT_STDDEV)


def batch_norm(name: str) -> layers.BatchNormalization:
    # Synchronised under MirroredStrategy: the statistics are those of the global batch, so N
    # replicas compute what one device computes on the same batch. Not on one device, where the
    # all-reduce path only costs time (bench/README.md).
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
        stated for one replica's batch, scaled to the strategy's global batch (N replicas
        train on an N times larger batch at N times the rate: Goyal et al., 2017)."""
        super().compile(optimizer=None, steps_per_execution=steps_per_execution)
        if learning_rate is None:
            learning_rate = LEARNING_RATE * tf.distribute.get_strategy().num_replicas_in_sync
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
# Sampling
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
        raise ValueError("a conditional generator needs labels")
    inputs = [noise, labels.astype(np.int32)] if conditional else noise
    return to_frames(infer(generator, inputs))


def unconditional_frames(generator: keras.Model, count: int, num_classes: int,
                         rng: np.random.Generator) -> np.ndarray:
    """What the generator draws when nobody asks for a digit (cGAN: uniformly random labels)."""
    noise = rng.standard_normal((count, generator.inputs[0].shape[-1])).astype(np.float32)
    labels = rng.integers(0, num_classes, count) if len(generator.inputs) == 2 else None
    return sample_frames(generator, noise, labels)


def fixed_grid_inputs(conditional: bool, latent_dim: int = LATENT_DIM):
    """The sample sheet's z (and y): the same every epoch, so the PNGs show training progress.
    cGAN: row r asks for digit r, and each column keeps its z across rows (one style per column)."""
    rng = np.random.default_rng(SEED)
    if not conditional:
        return rng.standard_normal((GRID_ROWS * GRID_ROWS, latent_dim)).astype(np.float32), None
    styles = rng.standard_normal((GRID_ROWS, latent_dim)).astype(np.float32)
    return np.tile(styles, (GRID_ROWS, 1)), np.repeat(np.arange(GRID_ROWS), GRID_ROWS)


def evaluation_draws(rng: np.random.Generator, latent_dim: int, num_classes: int,
                     held_out: int, samples: int, conditional: bool) -> dict:
    """The inputs an evaluation draws from `rng`, in its order: z for the Frechet distance of
    the trained and of the untrained generator (`held_out` each), (z, y) with every class in
    turn for the label accuracy (cGAN), and the unconditional draw (z, uniform y or None) for
    mode coverage. `apps.gan` evaluates on these and sends the same ones through each served path.
    """
    def noise(count):
        return rng.standard_normal((count, latent_dim)).astype(np.float32)

    draws = {"frechet": noise(held_out), "frechet_untrained": noise(held_out)}
    if conditional:
        draws["asked"] = (noise(samples), np.arange(samples, dtype=np.int32) % num_classes)
    z = noise(samples)  # then y: what unconditional_frames draws
    draws["unconditional"] = (z, rng.integers(0, num_classes, samples).astype(np.int32)
                              if conditional else None)
    return draws


def sheet(frames: np.ndarray, columns: int, scale: int = 2, gap: int = 2) -> np.ndarray:
    """uint8 frames [N, 28, 28, 1] tiled in rows of `columns`, grey gaps, enlarged `scale`x."""
    rows = -(-len(frames) // columns)
    cell = IMAGE_SIZE + gap
    canvas = np.full((rows * cell + gap, columns * cell + gap), 96, dtype=np.uint8)
    for i, frame in enumerate(frames):
        top, left = gap + (i // columns) * cell, gap + (i % columns) * cell
        canvas[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE] = frame[..., 0]
    return np.kron(canvas, np.ones((scale, scale), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Measuring a generator: Frechet distance between feature sets, mode coverage
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Serving: the generator behind TF Serving's signatures
# ---------------------------------------------------------------------------------------------


def serving_archive(generator: keras.Model, conditional: bool) -> keras.export.ExportArchive:
    """`serving_default`: noise (and label) -> uint8 images; `generate_png`: -> PNG bytes. The
    images are `to_frames` of the generator's output in the graph, as `sample_frames` makes
    them in numpy (tests/test_gan.py keeps the two equal)."""
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


# ---------------------------------------------------------------------------------------------
# While training: the sample sheet of every epoch
# ---------------------------------------------------------------------------------------------


def write_png(pixels: np.ndarray, path: Path) -> None:
    """A grey PNG written under a temporary name and renamed: never half a file at `path`."""
    from PIL import Image

    partial = path.with_name(f".{path.name}.partial")
    Image.fromarray(pixels).save(partial, format="PNG")
    os.replace(partial, path)


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
        write_png(sheet(frames, GRID_ROWS),
                  self.run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
        partial = self.run_dir / ".generator.partial.keras"  # `save` wants the .keras suffix
        generator.save(partial)
        os.replace(partial, self.run_dir / "generator.keras")
