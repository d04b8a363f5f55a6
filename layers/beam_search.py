"""Batched beam search over any step function: token ids in, token ids out.

Sequence models decode one token at a time: given the tokens so far (summarised in a state), a
step function returns log-probabilities over the vocabulary for the next token. Greedy decoding
keeps the single best token at each step; beam search (as in Sutskever, Vinyals & Le, 2014, and
GNMT, Wu et al., 2016, arXiv:1609.08144) keeps the `beam_width` best partial hypotheses, so a
token that looks second best now can still win later. Greedy decoding is beam width 1.

At each step the `beam_width` best extensions of the running hypotheses are kept; those that
emitted `end_id` leave the beam (their slot stays empty) and are ranked with GNMT's
length penalty, because raw log-probabilities favour short outputs:

    score(Y) = log P(Y | X) / lp(Y),    lp(Y) = ((5 + |Y|) / 6) ** alpha

where |Y| counts the generated tokens including the end token (alpha = 0: plain log-probability).
A hypothesis still running at `max_length` tokens is finished there as it is. `alpha` must be
>= 0: the search stops early once no running hypothesis can still beat the finished ones, a
bound that holds because lp never shrinks as a hypothesis grows.

The step function is the only link to a model, which keeps this module free of text and of any
architecture (the translator and the captioner both use it):

    step_fn(tokens, state) -> (log_probs, new_state)
        tokens     int32 [batch * beam_width]: each hypothesis' last token (`start_id` first)
        state      any nest of tensors with leading dimension batch * beam_width
        log_probs  float32 [batch * beam_width, vocab]: log P(next token | hypothesis)

Hypotheses of one input are contiguous rows (input b, beam k is row b * beam_width + k); state
rows are reordered with the beams at every step. Whatever the step function needs that does not
change (an encoder's memory) it closes over, repeated with `tile_beams`.

The loop is a `tf.while_loop` over preallocated [batch, beam, max_length] buffers, so the whole
search compiles into one graph when called inside a `tf.function` (this is what makes it many
times faster than a Python loop calling the model once per token), and it stops as soon as no
running hypothesis can still beat the finished ones.
"""

import tensorflow as tf

NEG_INF = -1e9  # "impossible": finite, so that sums and divisions never produce NaN


def tile_beams(tensor: tf.Tensor, beam_width: int) -> tf.Tensor:
    """[batch, ...] -> [batch * beam_width, ...], each row repeated beam_width times in a row."""
    return tf.repeat(tensor, beam_width, axis=0)


def length_penalty(length, alpha: float) -> tf.Tensor:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha."""
    return tf.pow((5.0 + tf.cast(length, tf.float32)) / 6.0, alpha)


def _gather_beams(nest, beam_indices: tf.Tensor, batch_size, width: int):
    """Picks rows of every [batch * width_in, ...] tensor in `nest` by per-input beam indices
    [batch, width] (indices into that input's beams), giving [batch * width, ...]."""
    def gather(tensor):
        width_in = tf.shape(tensor)[0] // batch_size
        rows = beam_indices + tf.range(batch_size)[:, None] * width_in  # [batch, width]
        return tf.gather(tensor, tf.reshape(rows, [-1]))

    return tf.nest.map_structure(gather, nest)


def beam_search(
    step_fn,
    initial_state,
    batch_size,
    start_id: int,
    end_id: int,
    max_length,
    beam_width: int = 4,
    alpha: float = 0.6,
) -> dict[str, tf.Tensor]:
    """Returns the `beam_width` best finished hypotheses of each input, best first.

    `initial_state`: a nest of tensors [batch, ...]; they are tiled to the beams here.
    `batch_size`, `max_length`: ints or scalar int32 tensors (the longest output, end included).

    Returns a dict:
        tokens     int32 [batch, beam_width, max_length], 0 after each hypothesis' end token
        lengths    int32 [batch, beam_width], generated tokens including the end token
        scores     float32 [batch, beam_width], log-probability / length penalty (ranking key)
        log_probs  float32 [batch, beam_width], the hypotheses' log-probabilities
    """
    k = int(beam_width)
    batch_size = tf.convert_to_tensor(batch_size, tf.int32)
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    state = tf.nest.map_structure(lambda s: tile_beams(s, k), initial_state)
    max_penalty = length_penalty(max_length, alpha)

    # Running ("alive") hypotheses; only beam 0 is live at first so the beams do not start
    # as k copies of the same prefix.
    alive_tokens = tf.zeros([batch_size, k, max_length], tf.int32)
    alive_log_probs = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch_size, 1])
    last_tokens = tf.fill([batch_size * k], tf.constant(start_id, tf.int32))
    # Finished hypotheses, kept sorted, k per input.
    done_tokens = tf.zeros([batch_size, k, max_length], tf.int32)
    done_scores = tf.fill([batch_size, k], NEG_INF)
    done_log_probs = tf.fill([batch_size, k], NEG_INF)
    done_lengths = tf.zeros([batch_size, k], tf.int32)

    def keep_going(t, alive_tokens, alive_log_probs, last_tokens, state, done_tokens,
                   done_scores, done_log_probs, done_lengths):
        # A running hypothesis can only lose log-probability, and lp grows with length, so
        # its best possible final score is log_prob / lp(max_length).
        best_possible = tf.reduce_max(alive_log_probs, axis=1) / max_penalty
        running = tf.reduce_max(alive_log_probs, axis=1) > NEG_INF / 2
        worst_kept = done_scores[:, -1]
        can_improve = tf.reduce_any(tf.logical_and(running, best_possible > worst_kept))
        return tf.logical_and(t < max_length, can_improve)

    def step(t, alive_tokens, alive_log_probs, last_tokens, state, done_tokens,
             done_scores, done_log_probs, done_lengths):
        log_probs, new_state = step_fn(last_tokens, state)
        vocab = tf.shape(log_probs)[-1]
        # Every extension of every running hypothesis: [batch, k * vocab].
        candidates = alive_log_probs[:, :, None] + tf.reshape(log_probs, [batch_size, k, vocab])
        candidates = tf.reshape(candidates, [batch_size, k * vocab])
        # The k best extensions, ending or not (so that width 1 is exactly greedy decoding).
        top_log_probs, top_indices = tf.math.top_k(candidates, k=k)
        beam_of = top_indices // vocab  # [batch, k]
        token_of = top_indices % vocab
        write = tf.one_hot(t, max_length, dtype=tf.int32)  # column t
        top_tokens = _gather_rows(alive_tokens, beam_of)  # [batch, k, max_length]
        top_tokens = top_tokens * (1 - write) + token_of[:, :, None] * write
        # Ends here: the end token, or the last position allowed.
        ends = tf.logical_or(tf.equal(token_of, end_id), t + 1 >= max_length)
        valid = top_log_probs > NEG_INF / 2  # not an extension of a dead beam

        # Those that did not end run on; a slot whose hypothesis ended is dead from now on.
        alive_log_probs = tf.where(ends, NEG_INF, top_log_probs)
        alive_tokens = top_tokens
        last_tokens = tf.reshape(token_of, [-1])
        state = _gather_beams(new_state, beam_of, batch_size, k)

        # Finished: merge those that ended now into the k best finished so far.
        length = t + 1
        new_scores = tf.where(tf.logical_and(ends, valid),
                              top_log_probs / length_penalty(length, alpha), NEG_INF)
        all_scores = tf.concat([done_scores, new_scores], axis=1)  # [batch, 2k]
        done_scores, pick = tf.math.top_k(all_scores, k=k)
        done_tokens = _gather_rows(tf.concat([done_tokens, top_tokens], axis=1), pick)
        done_log_probs = tf.gather(tf.concat([done_log_probs, top_log_probs], axis=1), pick,
                                   batch_dims=1)
        done_lengths = tf.gather(
            tf.concat([done_lengths, tf.fill(tf.shape(top_log_probs), length)], axis=1), pick,
            batch_dims=1)
        return (t + 1, alive_tokens, alive_log_probs, last_tokens, state, done_tokens,
                done_scores, done_log_probs, done_lengths)

    loop_vars = (tf.constant(0), alive_tokens, alive_log_probs, last_tokens, state, done_tokens,
                 done_scores, done_log_probs, done_lengths)
    _, _, _, _, _, done_tokens, done_scores, done_log_probs, done_lengths = tf.while_loop(
        keep_going, step, loop_vars, maximum_iterations=max_length
    )
    return {"tokens": done_tokens, "lengths": done_lengths, "scores": done_scores,
            "log_probs": done_log_probs}


def _gather_rows(tokens: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """tokens [batch, n, length], indices [batch, m] -> [batch, m, length]."""
    return tf.gather(tokens, indices, batch_dims=1)


class EncoderDecoderSearch:
    """Beam search through an encoder and an attention decoder (`layers.attention`): what the
    translator (source token ids in) and the captioner (images in) share.

        encoder(inputs, training=False) -> memory [batch, time, features], mask [batch, time],
                                           the decoder's initial state
        decoder.start_state(memory, state) -> the search's initial state, when the decoder has
                                           one (`layers.transformer`: an empty key/value cache)
        decoder.prepare_memory(memory)  -> attention keys, once per input
        decoder.step(tokens, state, memory, keys, mask) -> log_probs, state, attention weights

    Tokens in `forbidden_ids` (padding, the unknown word, a second start token) are never
    predicted: their log-probability gets NEG_INF before the beams are ranked.
    """

    def __init__(self, encoder, decoder, vocab_size: int, forbidden_ids, start_id: int,
                 end_id: int):
        self.encoder, self.decoder = encoder, decoder
        self.start_id, self.end_id = int(start_id), int(end_id)
        forbidden = [NEG_INF if token in set(forbidden_ids) else 0.0 for token in range(vocab_size)]
        self.forbidden = tf.constant(forbidden, tf.float32)

    def encode(self, inputs):
        """inputs [batch, ...] -> memory, attention keys, mask and the initial decoder state."""
        memory, mask, state = self.encoder(inputs, training=False)
        start_state = getattr(self.decoder, "start_state", None)
        if start_state is not None:  # a Transformer's empty cache (an RNN's comes from the encoder)
            state = start_state(memory, state)
        return memory, self.decoder.prepare_memory(memory), mask, state

    def decode_step(self, tokens, state, memory, keys, mask):
        """One token for each row: (log_probs with the forbidden tokens masked, state, weights)."""
        log_probs, state, weights = self.decoder.step(tokens, state, memory, keys, mask)
        return log_probs + self.forbidden, state, weights

    def decode(self, inputs, max_length, beam_width: int, alpha: float) -> dict:
        """inputs [batch, ...] -> `beam_search`'s dict (tokens [batch, beam, L], scores, ...)."""
        memory, keys, mask, state = self.encode(inputs)
        memory, keys, mask = (tile_beams(x, beam_width) for x in (memory, keys, mask))

        def step_fn(tokens, state):
            log_probs, state, _ = self.decode_step(tokens, state, memory, keys, mask)
            return log_probs, state

        return beam_search(step_fn, state, tf.shape(inputs)[0], self.start_id, self.end_id,
                           max_length, beam_width, alpha)
