"""The image loaders and the tf.data pipeline, on fixtures the tests write."""

import gzip
import struct
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import DataError, images

pytestmark = pytest.mark.fast  # the edit-test tier: make test-fast


def write_idx(path, array, gz):
    magic = 0x0800 | array.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def fake_mnist(folder, gz=True, train=5_100, test=50):
    """A folder shaped like MNIST's four IDX files, with random images of known labels."""
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for split, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}",
                  rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return folder


def draw_digit_png(path, digit_frame, dark_on_light=False, scale=3):
    image = Image.fromarray(digit_frame[..., 0]).resize((28 * scale, 28 * scale), Image.BILINEAR)
    if dark_on_light:
        image = Image.fromarray(255 - np.asarray(image))
    image.save(path)


# --- digits -----------------------------------------------------------------------------------


def test_digits_split_is_fixed_disjoint_and_complete(digits):
    sizes = [sum(1 for _ in split) for split in (digits.train, digits.validation, digits.test)]
    assert sizes == [1257, 180, 360]
    again = images.load_digits()
    first = np.stack([x.numpy() for x, _ in digits.test.take(20)])
    second = np.stack([x.numpy() for x, _ in again.test.take(20)])
    np.testing.assert_array_equal(first, second)
    train_hashes = {x.numpy().tobytes() for x, _ in digits.train}
    assert not any(x.numpy().tobytes() in train_hashes for x, _ in digits.test)


def test_digits_are_mnist_framed(digits):
    frames = np.stack([x.numpy() for x, _ in digits.train.take(200)]).astype(float)
    assert frames.shape[1:] == (28, 28, 1)
    # Light ink on black: the top rows empty (centring moves a digit down, towards MNIST's
    # centre, more often than up), the ink's centre of mass where MNIST puts it, (14, 14).
    assert frames[:, :2].max() == 0
    assert frames[:, -2:].mean() < 0.01 * frames.mean()
    for axis in (1, 2):
        mass = frames[..., 0].sum(axis=axis)  # [digits, 28]
        centres = (mass * np.arange(28)).sum(axis=1) / mass.sum(axis=1)
        assert np.abs(centres - 14.0).max() <= 0.5


def test_batches_feed_lenet(digits):
    x, y = next(iter(images.batches(digits.train, 32, shuffle=True)))
    assert x.shape == (32, 32, 32, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert float(tf.reduce_max(x[:, :2])) == 0.0  # LeNet's 2-pixel border


def test_augmentation_moves_pixels_but_keeps_the_batch(digits):
    plain, labels = next(iter(images.batches(digits.train, 32)))
    augmented = images.batches(digits.train, 32, augment=True)
    # Static height, width and channels survive the distortion: the DSN sizes its first module
    # from the pipeline's element_spec.
    assert augmented.element_spec[0].shape.as_list() == [None, 32, 32, 1]
    distorted, same_labels = next(iter(augmented))
    assert distorted.shape == plain.shape
    np.testing.assert_array_equal(labels, same_labels)
    assert 0.0 < float(tf.reduce_mean(tf.abs(distorted - plain))) < 0.2


def test_mnist_normalize_inverts_paper_and_centres(digits):
    frame = next(iter(digits.test))[0].numpy()
    paper = 255 - np.pad(np.kron(frame[..., 0], np.ones((3, 3))), ((10, 40), (60, 5)))
    normalised = images.mnist_normalize(paper[..., None].astype(np.uint8)).numpy()
    assert normalised.shape == (28, 28, 1)
    assert normalised[:3].max() == 0 and normalised.max() > 200  # dark background, bright ink
    correlation = np.corrcoef(normalised.ravel(), frame.ravel())[0, 1]
    assert correlation > 0.8


# --- MNIST IDX --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_loader(tmp_path, gz):
    dataset = images.load_image_dataset(str(fake_mnist(tmp_path, gz=gz)))
    sizes = [sum(1 for _ in s) for s in (dataset.train, dataset.validation, dataset.test)]
    assert sizes == [100, 5_000, 50]
    image, label = next(iter(dataset.test))
    assert image.shape == (28, 28, 1) and image.dtype == tf.uint8 and int(label) == 0
    assert dataset.class_names == [str(d) for d in range(10)]


def test_mnist_idx_bad_magic_is_named(tmp_path):
    fake_mnist(tmp_path, train=10, test=10)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(struct.pack(">II", 0x0803, 10) + bytes(10)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: bad magic number 0x00000803"):
        images.load_image_dataset(str(tmp_path))


def test_mnist_idx_truncated_file_is_named(tmp_path):
    fake_mnist(tmp_path, gz=False, train=10, test=10)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: .* bytes, header"):
        images.load_image_dataset(str(tmp_path))


def test_real_mnist_files_when_present():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist"
    if not folder.is_dir():
        pytest.skip("../shared/data/mnist is not here")
    dataset = images.load_mnist(folder.resolve())
    assert int(dataset.train.cardinality()) == 55_000
    assert int(dataset.test.cardinality()) == 10_000


# --- folder of class subfolders ---------------------------------------------------------------


def class_folder(root, digits, per_class=10):
    counts = {}
    for frame, label in digits.train:
        label = int(label)
        if counts.get(label, 0) < per_class:
            (root / f"class_{label}").mkdir(parents=True, exist_ok=True)
            name = root / f"class_{label}" / f"{counts.get(label, 0)}.png"
            draw_digit_png(name, frame.numpy(), dark_on_light=counts.get(label, 0) % 2 == 1)
            counts[label] = counts.get(label, 0) + 1
    return root


def test_image_folder_loader(tmp_path, digits):
    dataset = images.load_image_dataset(str(class_folder(tmp_path, digits)))
    assert dataset.class_names == [f"class_{d}" for d in range(10)]
    total = sum(sum(1 for _ in s) for s in (dataset.train, dataset.validation, dataset.test))
    assert total == 100
    frame, _ = next(iter(dataset.train))
    assert frame.shape == (28, 28, 1) and frame.dtype == tf.uint8
    assert frame.numpy()[:2].max() == 0  # dark-on-light files were inverted to MNIST polarity


def test_image_folder_corrupt_file_is_named(tmp_path, digits):
    class_folder(tmp_path, digits)
    broken = tmp_path / "class_3" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    with pytest.raises(DataError, match=r"class_3/broken.png: not a readable image"):
        images.load_image_dataset(str(tmp_path))


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="no images"):
        images.load_image_dataset(str(tmp_path))


def test_unknown_data_spec_is_an_error(tmp_path):
    with pytest.raises(DataError, match="--data .*nowhere: not 'digits'"):
        images.load_image_dataset(str(tmp_path / "nowhere"))


# --- TensorFlow Datasets ----------------------------------------------------------------------


def test_tfds_loader_on_mock_data(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(images, "network_reachable", lambda: True)
    with tfds.testing.mock_data(num_examples=30):
        dataset = images.load_image_dataset("tfds:mnist", tfds_data_dir=str(tmp_path))
        frame, label = next(iter(dataset.train))
        test_count = sum(1 for _ in dataset.test)
    assert frame.shape == (28, 28, 1) and frame.dtype == tf.uint8 and label.dtype == tf.int32
    assert dataset.num_classes == 10 and test_count == 30


def test_tfds_unprepared_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "network_reachable", lambda: False)
    started = time.monotonic()
    with pytest.raises(DataError, match="tfds:mnist: not prepared in .* network is unreachable"):
        images.load_image_dataset("tfds:mnist", tfds_data_dir=str(tmp_path))
    assert time.monotonic() - started < 10


def test_network_probe_is_bounded_even_when_the_lookup_hangs(monkeypatch):
    # No real connection: a stand-in for a DNS lookup that hangs, then fails as a real one
    # would (the probe's thread outlives this test and must end quietly).
    def hanging_lookup(*args, **kwargs):
        time.sleep(30)
        raise OSError("lookup timed out")

    monkeypatch.setattr(images.socket, "create_connection", hanging_lookup)
    started = time.monotonic()
    assert images.network_reachable(timeout=0.5) is False
    assert time.monotonic() - started < 2


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DataError, match="tfds:no_such_set: unknown dataset"):
        images.load_image_dataset("tfds:no_such_set", tfds_data_dir=str(tmp_path))
