"""Digit pictures to MNIST frames without TensorFlow, and its agreement with the graph version."""

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


def test_model_input_matches_the_pipeline(digits):
    frames = np.stack([f.numpy()[..., 0] for f, _ in digits.test.take(8)])
    expected = images.to_model_input(frames[..., None]).numpy()
    np.testing.assert_array_equal(digit_frames.model_input(frames), expected)
