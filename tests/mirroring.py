"""Checks shared by the tests that compare MirroredStrategy with one device."""

import numpy as np


def assert_same_adam_weights(expected, actual, steps, learning_rate, atol):
    """Weights after `steps` Adam steps agree to `atol`, but for a few (0.1% of a tensor, or 1).

    Adam divides a gradient by its own running magnitude, so an element whose gradient is about
    0 moves by about +-learning_rate whatever its size: float rounding, which differs between
    one device's sums and the replicas' all-reduce, can flip that sign. Such an element is off
    by at most 2 * learning_rate a step.
    """
    for one, two in zip(expected, actual):
        off = np.abs(one - two)
        assert (off > atol).sum() <= max(1, 1e-3 * off.size), (one.shape, (off > atol).sum())
        assert off.max() <= 2 * steps * learning_rate * 1.01, off.max()
