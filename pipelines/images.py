"""Image-classification datasets as `tf.data` pipelines.

Every source is brought to the MNIST convention: one channel, uint8, 28x28, light digit on a dark
background. The loaders return three unbatched splits of `(image uint8 [28, 28, 1], label int32)`;
`batches()` turns a split into what a model eats: shuffled, cached, batched, optionally augmented,
padded to LeNet-5's 32x32 input and scaled to [0, 1], prefetched.

Sources (the `--data` option of the apps):
- `digits` (the default, offline): scikit-learn's 1,797 real handwritten 8x8 digits, each
  brought to the MNIST frame by `mnist_normalize`, with a fixed stratified split.
- a folder holding the four MNIST IDX files (`.gz` or not), e.g. `../shared/data/mnist`.
- `tfds:NAME` for any TensorFlow Datasets image-classification set (mnist, fashion_mnist, ...).
- a folder of image files with one subfolder per class.
"""

import gzip
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import DataError
from pipelines.digit_frames import (
    ALREADY_FRAMED,
    DIGIT_BOX,
    FRAME_CENTRE,
    FRAME_SIZE,
    INK_LEVEL,
    MODEL_SIZE,
    check_image_file,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

SPLIT_SEED = 1234  # fixed, so a split never changes between runs
VALIDATION_SHARE = 0.1
TEST_SHARE = 0.2
MNIST_VALIDATION_SIZE = 5_000  # the last 5,000 training digits, held out for model selection
TFDS_PROBE_HOST = ("storage.googleapis.com", 443)
TFDS_PROBE_SECONDS = 3.0


@dataclass
class ImageDataset:
    """Three splits of `(image uint8 [28, 28, 1], label int32)` plus what describes them."""

    name: str
    class_names: list[str]
    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# Normalisation: what the loaders, `predict` and the serving signature share.
# ---------------------------------------------------------------------------------------------


def mnist_normalize(image: tf.Tensor) -> tf.Tensor:
    """Brings any grey-level digit image [H, W, 1] to the MNIST frame, the way MNIST was made.

    Dark-on-light images are inverted; the background level is removed and the contrast
    stretched. A picture that is already an MNIST frame (`digit_frames.ALREADY_FRAMED`: 28x28,
    its ink fitted into the 20x20 box, its centre of mass at the middle) is kept as it is, so an
    MNIST digit, or one this function framed, comes back unchanged. Any other picture has its
    ink's bounding box fitted into 20x20 (aspect kept) inside the 28x28 frame, and the frame is
    shifted so that the ink's centre of mass sits where MNIST puts it.
    Works on any input size, in eager code, in `tf.data` maps and inside a SavedModel graph.
    Returns uint8 [28, 28, 1]. `digit_frames.mnist_frame` is the same in numpy, for LiteRT.
    """
    image = tf.cast(image, tf.float32)
    border = tf.concat(
        [image[0, :, 0], image[-1, :, 0], image[:, 0, 0], image[:, -1, 0]], axis=0
    )
    # Paper is brighter than ink: a border brighter than the whole means dark-on-light.
    dark_on_light = tf.reduce_mean(border) > tf.reduce_mean(image)
    image = tf.where(dark_on_light, 255.0 - image, image)
    border = tf.where(dark_on_light, 255.0 - border, border)
    # The paper's level: the border's median, which ink touching the edge does not move.
    image = tf.nn.relu(image - tf.sort(border)[tf.size(border) // 2])
    image = image * (255.0 / tf.maximum(tf.reduce_max(image), 1e-3))

    ink = image[:, :, 0] > INK_LEVEL * 255.0
    rows = tf.where(tf.reduce_any(ink, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(ink, axis=0))[:, 0]
    has_ink = tf.size(rows) > 0
    top = tf.cond(has_ink, lambda: tf.reduce_min(rows), lambda: tf.constant(0, tf.int64))
    bottom = tf.cond(has_ink, lambda: tf.reduce_max(rows) + 1, lambda: tf.shape(image, tf.int64)[0])
    left = tf.cond(has_ink, lambda: tf.reduce_min(cols), lambda: tf.constant(0, tf.int64))
    right = tf.cond(has_ink, lambda: tf.reduce_max(cols) + 1, lambda: tf.shape(image, tf.int64)[1])

    def centre_of_mass(frame):  # (row, column)
        mass = tf.reduce_sum(frame) + 1e-6
        rows_grid = tf.range(tf.shape(frame)[0], dtype=tf.float32)
        cols_grid = tf.range(tf.shape(frame)[1], dtype=tf.float32)
        return (tf.reduce_sum(tf.reduce_sum(frame, axis=[1, 2]) * rows_grid) / mass,
                tf.reduce_sum(tf.reduce_sum(frame, axis=[0, 2]) * cols_grid) / mass)

    size = tf.shape(image)
    longer_side = tf.maximum(bottom - top, right - left)
    centre = centre_of_mass(image)
    framed = (has_ink & tf.equal(size[0], FRAME_SIZE) & tf.equal(size[1], FRAME_SIZE)
              & (longer_side >= ALREADY_FRAMED["min_box"]) & (longer_side <= DIGIT_BOX)
              & (tf.abs(centre[0] - FRAME_CENTRE) <= ALREADY_FRAMED["centre_tolerance"])
              & (tf.abs(centre[1] - FRAME_CENTRE) <= ALREADY_FRAMED["centre_tolerance"]))

    def refit():
        digit = tf.image.resize_with_pad(image[top:bottom, left:right, :], DIGIT_BOX, DIGIT_BOX,
                                         antialias=True)
        # Resampling softens the darkest ink: stretched again, so that framing the result
        # once more leaves it as it is.
        digit = digit * (255.0 / tf.maximum(tf.reduce_max(digit), 1e-3))
        margin = (FRAME_SIZE - DIGIT_BOX) // 2
        frame = tf.pad(digit, [[margin, margin], [margin, margin], [0, 0]])
        centre_row, centre_col = centre_of_mass(frame)
        # The shift never exceeds the margin, so rolling cannot wrap ink around the edge.
        shift = tf.clip_by_value(tf.cast(tf.round(
            [FRAME_CENTRE - centre_row, FRAME_CENTRE - centre_col]), tf.int32), -margin, margin)
        return tf.roll(frame, shift=shift, axis=[0, 1])

    if image.shape[:2].is_fully_defined() and image.shape[:2] != (FRAME_SIZE, FRAME_SIZE):
        frame = refit()  # known not to be a frame when the graph is built
    else:
        frame = tf.cond(framed, lambda: tf.reshape(image, [FRAME_SIZE, FRAME_SIZE, 1]), refit)
    return tf.cast(tf.clip_by_value(tf.round(frame), 0.0, 255.0), tf.uint8)


def decode_grayscale(encoded: tf.Tensor) -> tf.Tensor:
    """PNG / JPEG / BMP / GIF bytes -> uint8 [H, W, 1]."""
    return tf.io.decode_image(encoded, channels=1, expand_animations=False)


def to_model_input(images: tf.Tensor) -> tf.Tensor:
    """uint8 [..., 28, 28, 1] -> float32 [..., 32, 32, 1] in [0, 1]: LeNet-5's input."""
    pad = (MODEL_SIZE - FRAME_SIZE) // 2
    paddings = [[0, 0]] * (len(images.shape) - 3) + [[pad, pad], [pad, pad], [0, 0]]
    return tf.pad(tf.cast(images, tf.float32) / 255.0, paddings)


# Distortion ranges, each way. MNIST's digits were centred by their centre of mass, so a couple
# of pixels of shift, ten degrees and 8% of scale still look like the test digits.
AUGMENT_SHIFT = 2.5  # pixels
AUGMENT_ROTATION = 10.0  # degrees
AUGMENT_ZOOM = 0.08  # relative scale


def augmenter(seed: int = 0):
    """Light, label-preserving distortions: a few pixels of shift, a few degrees of rotation, a
    little zoom, drawn per image and composed into ONE affine map, so that each image is
    resampled once: three Keras layers in a row (RandomTranslation, RandomRotation, RandomZoom)
    resample three times, the bilinear blur adds up and the training digits stop looking like
    the sharp test digits. On real MNIST, lenet5-modern's test error over two seeds went from
    0.62 / 0.70% with the three layers to 0.59 / 0.48% with one resample (bench/README.md).

    Returns `distort(images [B, H, W, C] float32, training=True)`.
    """

    def distort(images: tf.Tensor, training: bool = True) -> tf.Tensor:
        if not training:
            return images
        count = tf.shape(images)[0]
        size = tf.cast(tf.shape(images)[1:3], tf.float32)

        def uniform(offset):  # [B] in [-1, 1]
            return tf.random.uniform([count], -1.0, 1.0, seed=seed + offset)

        angle = uniform(0) * AUGMENT_ROTATION * np.pi / 180.0
        scale = 1.0 + uniform(1) * AUGMENT_ZOOM
        shift_x, shift_y = uniform(2) * AUGMENT_SHIFT, uniform(3) * AUGMENT_SHIFT
        # The transform maps each OUTPUT pixel (x, y) to where it reads in the input: rotate
        # and scale about the image centre, then shift.
        centre_x, centre_y = (size[1] - 1.0) / 2.0, (size[0] - 1.0) / 2.0
        a0, a1 = tf.cos(angle) / scale, -tf.sin(angle) / scale
        b0, b1 = tf.sin(angle) / scale, tf.cos(angle) / scale
        a2 = centre_x - a0 * centre_x - a1 * centre_y + shift_x
        b2 = centre_y - b0 * centre_x - b1 * centre_y + shift_y
        zeros = tf.zeros([count])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)  # [B, 8]
        distorted = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
        )
        # The raw op forgets the static height and width; models built from the pipeline's
        # element_spec (the DSN sizes its first module from it) need them.
        return tf.ensure_shape(distorted, images.shape)

    return distort


def batches(
    split: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: bool = False,
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    """An unbatched split -> batches of (float32 [B, 32, 32, 1], int32 [B]) ready for `fit`.

    The uint8 images are cached (a quarter of the float size), then shuffled, batched and
    converted a batch at a time, which costs less than one map call per image.
    """
    if cache:
        split = split.cache()
    if shuffle:
        split = split.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    data = split.batch(batch_size).map(
        lambda images, labels: (to_model_input(images), labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if augment:
        distort = augmenter(seed)
        data = data.map(
            lambda images, labels: (distort(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return data.prefetch(tf.data.AUTOTUNE)


def count(split: tf.data.Dataset) -> int:
    """Examples in a split (counted when tf.data does not know)."""
    known = int(split.cardinality())
    return known if known >= 0 else sum(1 for _ in split)


def labelled_arrays(split: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """An unbatched split as numpy (images float32 [N, 32, 32, 1], labels int32 [N])."""
    images, labels = [], []
    for image_batch, label_batch in batches(split, 512, cache=False):
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def _stratified_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    rest, test = train_test_split(
        indices, test_size=TEST_SHARE, stratify=labels, random_state=SPLIT_SEED
    )
    train, validation = train_test_split(
        rest,
        test_size=VALIDATION_SHARE / (1 - TEST_SHARE),
        stratify=labels[rest],
        random_state=SPLIT_SEED,
    )
    return train, validation, test


def _from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))


def load_digits() -> ImageDataset:
    """scikit-learn's handwritten digits (1,797 images of 8x8, 16 grey levels), MNIST-framed."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # 0..16 ink levels -> 0..255, upsampled before framing so the 20x20 box gets smooth strokes.
    # A dark border first: ink touches the edge of many 8x8 images, and the polarity test in
    # `mnist_normalize` reads the border.
    small = np.pad(digits.images * (255.0 / 16.0), [(0, 0), (2, 2), (2, 2)])[..., None]
    smooth = tf.image.resize(small.astype(np.float32), (4 * 12, 4 * 12), method="bicubic")
    framing = tf.data.Dataset.from_tensor_slices(smooth).map(mnist_normalize).batch(len(smooth))
    framed = next(iter(framing)).numpy()
    labels = digits.target.astype(np.int32)
    train, validation, test = _stratified_split(labels)
    return ImageDataset(
        name="digits",
        class_names=[str(d) for d in range(10)],
        train=_from_arrays(framed[train], labels[train]),
        validation=_from_arrays(framed[validation], labels[validation]),
        test=_from_arrays(framed[test], labels[test]),
    )


IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """One IDX file (the MNIST format; gzipped or not) as a uint8 array."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad magic number 0x{magic:08x} (expected 0x{expected_magic:08x})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, header {shape} promises {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    # Accept both `train-images-idx3-ubyte` and the `train-images.idx3-ubyte` spelling.
    for candidate in sorted(folder.iterdir()):
        name = candidate.name.replace(".", "-")
        if name.startswith(stem):
            return candidate
    raise DataError(f"{folder}: no {stem} file (gzipped or not)")


def looks_like_mnist(folder: Path) -> bool:
    return any("idx3-ubyte" in p.name.replace(".", "-") for p in folder.iterdir())


def load_mnist(folder: Path) -> ImageDataset:
    """MNIST from a folder of its four IDX files; the last 5,000 training digits validate."""
    arrays = {}
    for split in ("train", "t10k"):
        images = read_idx(_find_idx(folder, f"{split}-images-idx3-ubyte"), IDX_IMAGES_MAGIC)
        labels_path = _find_idx(folder, f"{split}-labels-idx1-ubyte")
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
        if len(images) != len(labels) or images.shape[1:] != (FRAME_SIZE, FRAME_SIZE):
            raise DataError(
                f"{labels_path}: {len(labels)} labels for images of shape {images.shape}"
            )
        arrays[split] = (images[..., None], labels.astype(np.int32))
    train_images, train_labels = arrays["train"]
    cut = len(train_images) - MNIST_VALIDATION_SIZE
    return ImageDataset(
        name=f"mnist:{folder}",
        class_names=[str(d) for d in range(10)],
        train=_from_arrays(train_images[:cut], train_labels[:cut]),
        validation=_from_arrays(train_images[cut:], train_labels[cut:]),
        test=_from_arrays(*arrays["t10k"]),
    )


def load_image_folder(root: Path) -> ImageDataset:
    """A folder with one subfolder per class of image files (PNG, JPEG, BMP, GIF).

    Every file is checked up front, so a corrupt one is named before training starts instead of
    failing in the middle of an epoch. Images are decoded in the pipeline and MNIST-framed.
    """
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(label)
    if not paths:
        raise DataError(
            f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in one-subfolder-per-class layout"
        )
    if len(class_dirs) < 2:
        raise DataError(f"{root}: needs at least two class subfolders, found {len(class_dirs)}")
    for path in paths:
        check_image_file(path)

    labels = np.array(labels, dtype=np.int32)
    counts = np.bincount(labels, minlength=len(class_dirs))
    if counts.min() < 10:
        thin = class_dirs[int(counts.argmin())]
        raise DataError(f"{thin}: {counts.min()} images; each class needs at least 10 to split")
    train, validation, test = _stratified_split(labels)
    path_strings = np.array([str(p) for p in paths])

    def split(indices):
        files = tf.data.Dataset.from_tensor_slices((path_strings[indices], labels[indices]))
        return files.map(
            lambda path, label: (mnist_normalize(decode_grayscale(tf.io.read_file(path))), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    return ImageDataset(
        name=f"folder:{root}",
        class_names=[d.name for d in class_dirs],
        train=split(train),
        validation=split(validation),
        test=split(test),
    )


def network_reachable(address=TFDS_PROBE_HOST, timeout=TFDS_PROBE_SECONDS) -> bool:
    """Whether TFDS' download host answers within `timeout` seconds (DNS included)."""
    result = []

    def probe():
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)  # a hanging DNS lookup has no timeout of its own
    return bool(result)


def load_tfds(name: str, data_dir: str | None = None) -> ImageDataset:
    """A TensorFlow Datasets image-classification set; 10% of `train` validates.

    Offline, `tfds.load` of a set that is not prepared retries its downloads for minutes:
    we probe the network first and fail at once with what to do instead.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        reason = str(error).splitlines()[0]
        raise DataError(f"tfds:{name}: unknown dataset ({reason})") from None
    if not builder.is_prepared():
        if not network_reachable():
            raise DataError(
                f"tfds:{name}: not prepared in {builder.data_dir} and the network is unreachable;"
                f" run `tfds build {name}` on a connected machine and copy its data_dir here"
            )
        builder.download_and_prepare()

    features = builder.info.features
    if "label" not in features or "image" not in features:
        raise DataError(f"tfds:{name}: not an image-classification set (needs image and label)")
    class_names = list(features["label"].names)

    def split(spec):
        def frame(image, label):
            image = tf.image.rgb_to_grayscale(image) if image.shape[-1] == 3 else image
            image = tf.image.resize(image, (FRAME_SIZE, FRAME_SIZE), antialias=True)
            return tf.cast(tf.round(image), tf.uint8), tf.cast(label, tf.int32)

        data = builder.as_dataset(split=spec, as_supervised=True)
        return data.map(frame, num_parallel_calls=tf.data.AUTOTUNE)

    if "test" in builder.info.splits:
        train_split, validation_split, test_split = "train[:90%]", "train[90%:]", "test"
    else:
        train_split, validation_split, test_split = "train[:80%]", "train[80%:90%]", "train[90%:]"
    return ImageDataset(
        name=f"tfds:{name}",
        class_names=class_names,
        train=split(train_split),
        validation=split(validation_split),
        test=split(test_split),
    )


def load_image_dataset(spec: str, tfds_data_dir: str | None = None) -> ImageDataset:
    """What `--data` names: `digits`, `tfds:NAME`, a folder of MNIST IDX files or of classes."""
    if spec == "digits":
        return load_digits()
    if spec.startswith("tfds:"):
        return load_tfds(spec.removeprefix("tfds:"), tfds_data_dir)
    folder = Path(spec)
    if not folder.is_dir():
        raise DataError(
            f"--data {spec}: not 'digits', 'tfds:NAME', nor a folder"
            " (of MNIST IDX files, or of one subfolder per class)"
        )
    return load_mnist(folder) if looks_like_mnist(folder) else load_image_folder(folder)
