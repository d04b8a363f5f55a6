"""Digit pictures to MNIST frames without TensorFlow, and its agreement with the graph version."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from pipelines import digit_frames, images

pytestmark = pytest.mark.fast  # the edit-test tier: make test-fast


def test_segmentation_merges_broken_strokes_and_drops_specks():
    canvas = np.zeros((60, 120), dtype=np.uint8)
    canvas[10:50, 10:14] = 255  # a "1"
    canvas[10:14, 60:90] = 255  # the top bar of a "5", written apart from its body
    canvas[20:50, 60:64] = 255
    canvas[46:50, 60:90] = 255
    canvas[30, 110] = 255  # a speck of dust
    assert len(digit_frames.segment_digits(canvas)) == 2
    assert digit_frames.segment_digits(np.zeros((30, 30), dtype=np.uint8)) == []


def test_numpy_framing_agrees_with_the_tensorflow_graph(digits):
    for frame, _ in digits.test.take(30):
        frame = frame.numpy()[..., 0]
        # A larger, off-centre, dark-on-light picture of the digit, as a user would send.
        picture = 255 - np.pad(np.kron(frame, np.ones((3, 3))), ((5, 30), (40, 12)))
        by_numpy = digit_frames.mnist_frame(picture).astype(float)
        by_graph = images.mnist_normalize(picture[..., None].astype(np.uint8)).numpy()[..., 0]
        assert np.corrcoef(by_numpy.ravel(), by_graph.ravel())[0, 1] > 0.97
        assert np.abs(by_numpy - by_graph).mean() < 12  # grey levels out of 255


MNIST_TEST = Path(__file__).resolve().parents[2] / "shared/data/mnist/t10k-images-idx3-ubyte.gz"


def real_frames(digits, count: int = 200) -> np.ndarray:
    """Real handwritten digits already in the MNIST frame: MNIST's test digits when
    ../shared/data holds them, and the embedded digits' test split (framed by the loader)."""
    frames = [f.numpy()[..., 0] for f, _ in digits.test.take(count)]
    if MNIST_TEST.is_file():
        mnist = np.frombuffer(gzip.open(MNIST_TEST).read(), np.uint8, offset=16)
        frames += list(mnist.reshape(-1, 28, 28)[:count])
    return np.stack(frames)


def test_an_mnist_frame_is_kept_as_it_is_by_numpy_and_by_the_graph(digits):
    """What makes a served digit the evaluated one: framing a framed digit changes nothing."""
    for frame in real_frames(digits):
        by_graph = images.mnist_normalize(frame[..., None]).numpy()[..., 0]
        np.testing.assert_array_equal(digit_frames.mnist_frame(frame), by_graph)
        # MNIST's darkest ink is 254 or 255: the contrast stretch moves a level at most.
        assert np.abs(by_graph.astype(int) - frame).max() <= 1


def test_framing_real_digits_drawn_larger_agrees_between_numpy_and_the_graph(digits):
    for frame in real_frames(digits, 60):
        # Larger, off-centre, dark-on-light, as a photo or a scan of the digit would be.
        picture = 255 - np.pad(np.kron(frame, np.ones((3, 3))), ((5, 30), (40, 12)))
        by_numpy = digit_frames.mnist_frame(picture).astype(float)
        by_graph = images.mnist_normalize(picture[..., None].astype(np.uint8)).numpy()[..., 0]
        assert np.corrcoef(by_numpy.ravel(), by_graph.ravel())[0, 1] > 0.97
        assert np.abs(by_numpy - by_graph).mean() < 12  # grey levels out of 255


def test_a_picture_of_one_digit_is_read_whole_and_a_row_is_cut(digits):
    frame = next(iter(digits.test))[0].numpy()[..., 0]
    (whole,) = digit_frames.digit_pictures(frame)
    np.testing.assert_array_equal(whole[..., 0], frame)
    row = np.concatenate([np.pad(frame, 6)] * 3, axis=1)
    assert len(digit_frames.digit_pictures(row)) == 3


def test_model_input_matches_the_pipeline(digits):
    frames = np.stack([f.numpy()[..., 0] for f, _ in digits.test.take(8)])
    expected = images.to_model_input(frames[..., None]).numpy()
    np.testing.assert_array_equal(digit_frames.model_input(frames), expected)
