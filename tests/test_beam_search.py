"""Beam search against brute force: on a tiny vocabulary every output sequence can be scored, so
the search's answer can be checked exactly. The toy "model" gives each prefix its own random
next-token distribution (the state is a code of the whole prefix), so a wrong reordering of the
state between steps gives wrong answers."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from layers.beam_search import beam_search, length_penalty

pytestmark = pytest.mark.fast  # the edit-test tier: make test-fast

VOCAB = 4  # tokens 0..3; 3 is the end token
END = 3
START = 0
MAX_LENGTH = 4
TABLE_SIZE = 1024


def toy_model(seed: int, batch: int, sharpness: float = 1.5):
    """A step function whose next-token log-probs depend on the input and the whole prefix."""
    rng = np.random.default_rng(seed)
    table = (rng.normal(size=(batch, TABLE_SIZE, VOCAB)) * sharpness).astype("float32")
    log_table = tf.nn.log_softmax(table, axis=-1)

    def step_fn(tokens, state):
        code, row = state  # prefix code and input index, each [rows]
        code = code * VOCAB + tokens + 1  # the prefix now ends with `tokens`
        log_probs = tf.gather_nd(log_table, tf.stack([row, code % TABLE_SIZE], axis=1))
        return log_probs, (code, row)

    def initial_state():
        return (tf.zeros([batch], tf.int32), tf.range(batch, dtype=tf.int32))

    def sequence_log_prob(b, sequence):
        code, total, token = 0, 0.0, START
        for nxt in sequence:
            code = code * VOCAB + token + 1
            total += float(log_table[b, code % TABLE_SIZE, nxt])
            token = nxt
        return total

    return step_fn, initial_state, sequence_log_prob


def every_output(max_length=MAX_LENGTH):
    """All outputs: sequences ending with END, and those cut at max_length without it."""
    for length in range(1, max_length + 1):
        for body in itertools.product(range(VOCAB - 1), repeat=length - 1):
            yield (*body, END)
    yield from itertools.product(range(VOCAB - 1), repeat=max_length)


def brute_force(sequence_log_prob, b, alpha):
    scored = []
    for sequence in every_output():
        log_prob = sequence_log_prob(b, sequence)
        scored.append((log_prob / float(length_penalty(len(sequence), alpha)), sequence))
    return sorted(scored, key=lambda s: -s[0])


def run(step_fn, initial_state, batch, width, alpha):
    outputs = tf.function(lambda: beam_search(step_fn, initial_state(), batch, START, END,
                                              MAX_LENGTH, width, alpha))()
    return {name: value.numpy() for name, value in outputs.items()}


def as_sequence(tokens, length):
    return tuple(int(t) for t in tokens[:length])


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_wide_beam_finds_the_brute_force_best_sequences(alpha):
    batch = 3
    step_fn, initial_state, sequence_log_prob = toy_model(seed=1, batch=batch)
    # At most 3 ** 2 running prefixes reach the last step but one, 36 extensions: a beam of 48
    # never drops a prefix that could still win, so it is exact.
    width = 48
    out = run(step_fn, initial_state, batch, width, alpha)
    for b in range(batch):
        expected = brute_force(sequence_log_prob, b, alpha)[:5]
        for rank, (score, sequence) in enumerate(expected):
            assert as_sequence(out["tokens"][b, rank], out["lengths"][b, rank]) == sequence
            assert out["scores"][b, rank] == pytest.approx(score, abs=1e-4)
            assert out["log_probs"][b, rank] == pytest.approx(sequence_log_prob(b, sequence),
                                                              abs=1e-4)


def test_width_one_is_greedy_decoding():
    batch = 4
    step_fn, initial_state, sequence_log_prob = toy_model(seed=2, batch=batch)
    out = run(step_fn, initial_state, batch, width=1, alpha=0.0)
    for b in range(batch):
        greedy = []
        while len(greedy) < MAX_LENGTH and (not greedy or greedy[-1] != END):
            candidates = [sequence_log_prob(b, (*greedy, t)) for t in range(VOCAB)]
            greedy.append(int(np.argmax(candidates)))
        assert as_sequence(out["tokens"][b, 0], out["lengths"][b, 0]) == tuple(greedy)


def test_narrow_beam_is_never_worse_than_greedy_and_never_better_than_exact():
    batch = 16
    step_fn, initial_state, sequence_log_prob = toy_model(seed=3, batch=batch, sharpness=1.0)
    greedy = run(step_fn, initial_state, batch, 1, 0.0)["scores"][:, 0]
    narrow = run(step_fn, initial_state, batch, 3, 0.0)["scores"][:, 0]
    exact = np.array([brute_force(sequence_log_prob, b, 0.0)[0][0] for b in range(batch)])
    assert np.all(narrow >= greedy - 1e-5)
    assert np.all(narrow <= exact + 1e-5)
    assert np.any(narrow > greedy + 1e-3)  # the beam does find better outputs than greedy
    assert np.any(greedy < exact - 1e-3)  # greedy is not already optimal on this toy


def test_finished_hypotheses_stay_finished_and_are_padded():
    batch = 5
    step_fn, initial_state, _ = toy_model(seed=4, batch=batch)
    out = run(step_fn, initial_state, batch, 6, 0.6)
    for b in range(batch):
        for rank in range(6):
            tokens, length = out["tokens"][b, rank], out["lengths"][b, rank]
            body = tokens[: length - 1]
            assert END not in body  # the end token, when present, is the last one
            assert np.all(tokens[length:] == 0)
        assert np.all(np.diff(out["scores"][b]) <= 1e-6)  # best first


def test_length_penalty_prefers_longer_outputs():
    """A model that always gives the end token probability 0.5: alpha 0 stops at once; a large
    alpha makes the longest output the best one."""
    log_probs = np.log(np.array([[1 / 6, 1 / 6, 1 / 6, 1 / 2]], dtype="float32"))

    def step_fn(tokens, state):
        return tf.repeat(tf.constant(log_probs), tf.shape(tokens)[0], axis=0), state

    def best_length(alpha):
        out = tf.function(lambda: beam_search(step_fn, tf.zeros([2, 1]), 2, START, END, 6, 4,
                                              alpha))()
        return out["lengths"].numpy()[:, 0]

    assert list(best_length(0.0)) == [1, 1]
    assert list(best_length(5.0)) == [6, 6]


def test_runs_eagerly_too_and_batch_can_be_a_tensor():
    step_fn, initial_state, _ = toy_model(seed=5, batch=2)
    eager = beam_search(step_fn, initial_state(), tf.constant(2), START, END, MAX_LENGTH, 4, 0.6)
    compiled = run(step_fn, initial_state, 2, 4, 0.6)
    np.testing.assert_array_equal(eager["tokens"].numpy(), compiled["tokens"])
