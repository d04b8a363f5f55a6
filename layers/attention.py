"""A recurrent decoder with attention over a memory sequence, usable on a whole target sequence
(teacher forcing, for training) or one token at a time (for beam search and phones).

An encoder-decoder squeezes the input into a "thought vector" from which a decoder writes the
output (Sutskever, Vinyals & Le, 2014; Cho et al., 2014). Attention (Bahdanau, Cho & Bengio,
2015, arXiv:1409.0473) lets the decoder look back at every encoder position instead: at each
output step it scores each memory vector against its current state, turns the scores into
weights with a softmax, and reads their weighted average (the context).

This layer follows Luong, Pham & Manning (2015, arXiv:1508.04025): the RNN runs first and its
output is the attention query, then the context and the RNN output make the "attentional hidden
state" h~ = tanh(W_c [context; h]) from which the next token is predicted. Because the query does
not depend on the previous context, teacher forcing runs the RNN over the whole target in one
call. Two score functions:

    luong     score(h, m) = h . W_a m                       (Luong's "general")
    bahdanau  score(h, m) = v . tanh(W_1 m + W_2 h)         (Bahdanau's additive score)

The interface knows nothing of text; the captioner uses it over image regions:

    decoder = AttentionDecoder(vocab_size, embedding_dim, units, cell="gru", attention="luong")
    keys = decoder.prepare_memory(memory)            # once per input: [batch, time, units]
    logits = decoder(tokens, memory, memory_mask, initial_state)          # teacher forcing
    log_probs, state, weights = decoder.step(tokens, state, memory, keys, memory_mask)

    tokens        int32 [batch, T] (or [batch] in `step`)
    memory        float [batch, time, features], e.g. an encoder's outputs
    memory_mask   float [batch, time], 1 where the memory is real, 0 for padding
    initial_state a list of [batch, units] tensors: [h] for a GRU, [h, c] for an LSTM
    logits        [batch, T, vocab_size]; log_probs [batch, vocab_size]; weights [batch, time]

`step` is what `layers.beam_search` needs: wrap it in a step function that closes over the memory.
"""

import keras
from keras import layers, ops

CELLS = ("gru", "lstm")
ATTENTIONS = ("luong", "bahdanau")
MASKED_SCORE = -1e9


@keras.saving.register_keras_serializable(package="layers")
class AttentionDecoder(layers.Layer):
    def __init__(self, vocab_size: int, embedding_dim: int = 128, units: int = 256,
                 cell: str = "gru", attention: str = "luong", dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell {cell!r}: choose from {CELLS}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention {attention!r}: choose from {ATTENTIONS}")
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.cell_type, self.attention_type, self.dropout_rate = cell, attention, dropout
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        rnn = layers.GRU if cell == "gru" else layers.LSTM
        self.rnn = rnn(units, return_sequences=True, return_state=True, name=cell)
        self.memory_dense = layers.Dense(units, use_bias=False, name="memory_keys")  # W_a / W_1
        if attention == "bahdanau":
            self.query_dense = layers.Dense(units, use_bias=False, name="query")  # W_2
            self.score_dense = layers.Dense(1, use_bias=False, name="score")  # v
        self.combine = layers.Dense(units, activation="tanh", name="attentional")  # W_c
        self.dropout = layers.Dropout(dropout)
        self.output_dense = layers.Dense(vocab_size, name="logits")

    @property
    def state_count(self) -> int:
        return 1 if self.cell_type == "gru" else 2

    def prepare_memory(self, memory):
        """The memory's half of the score, computed once per input: [batch, time, units]."""
        return self.memory_dense(memory)

    def attend(self, queries, memory, keys, memory_mask):
        """queries [batch, T, units] -> context [batch, T, features], weights [batch, T, time]."""
        if self.attention_type == "luong":
            scores = ops.einsum("btu,bsu->bts", queries, keys)
        else:
            hidden = ops.tanh(keys[:, None, :, :] + self.query_dense(queries)[:, :, None, :])
            scores = ops.squeeze(self.score_dense(hidden), -1)  # [batch, T, time]
        # In float32 also under mixed_float16: there MASKED_SCORE is -inf and 0 * -inf is NaN.
        mask = ops.cast(memory_mask, "float32")[:, None, :]
        weights = ops.softmax(ops.cast(scores, "float32") + (1.0 - mask) * MASKED_SCORE, axis=-1)
        return ops.einsum("bts,bsf->btf", ops.cast(weights, memory.dtype), memory), weights

    def _predict(self, outputs, memory, keys, memory_mask, training=None):
        context, weights = self.attend(outputs, memory, keys, memory_mask)
        attentional = self.combine(ops.concatenate([context, outputs], axis=-1))
        return self.output_dense(self.dropout(attentional, training=training)), weights

    def call(self, tokens, memory, memory_mask, initial_state, return_attention=False,
             training=None):
        x = self.dropout(self.embedding(tokens), training=training)
        outputs = self.rnn(x, initial_state=list(initial_state), training=training)[0]
        logits, weights = self._predict(outputs, memory, self.prepare_memory(memory),
                                        memory_mask, training)
        return (logits, weights) if return_attention else logits

    def step(self, tokens, state, memory, keys, memory_mask):
        """One token per row: tokens [batch] -> (log_probs [batch, vocab], new state, weights)."""
        x = self.embedding(tokens)  # [batch, embedding_dim]
        output, new_state = self.rnn.cell(x, list(state))
        new_state = list(new_state) if isinstance(new_state, list | tuple) else [new_state]
        logits, weights = self._predict(output[:, None, :], memory, keys, memory_mask)
        return ops.log_softmax(logits[:, 0], axis=-1), new_state, weights[:, 0]

    def build(self, *args, **kwargs):
        # The sub-layers build on the first call (a functional model makes it when it is
        # created or loaded); nothing to create before that.
        self.built = True

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim, "units": self.units, "cell": self.cell_type,
                "attention": self.attention_type, "dropout": self.dropout_rate}
