"""Training speed of our Transformer (`layers/transformer.py`, Keras on TensorFlow) against a
PyTorch twin of the same sizes, on the same Tatoeba batches, side by side in one run: target
tokens per second of the training step (forward, loss, backward, Adam).

    pip install -e '.[bench]'                 # torch, for this comparison only
    python -m bench.transformer_speed         # the bench configuration (3 layers of 256)

The twin is built from torch's own blocks (`nn.TransformerEncoderLayer` and
`nn.TransformerDecoderLayer` with `norm_first=True`, i.e. pre-layer-norm as ours), the same
embedding scale and sine positions, the same output layer, label-smoothed cross-entropy that
ignores padding, Adam. Both run on the same 2 CPU threads, one after the other; each is timed
after a warm-up that compiles (Keras' tf.function) or allocates (torch).
"""

import argparse
import math
import time

import numpy as np

from apps import translation as tr
from bench import save_results
from bench.translation import HELD_OUT, TATOEBA, TRANSFORMER_CONFIG
from layers.transformer import sine_positions
from models import seq2seq
from models.sequence_training import CLIP_NORM
from pipelines import text_pairs

WARMUP_BATCHES = 5
TIMED_BATCHES = 40
THREADS = 2
SPEED_TARGET = 1.0  # ours / PyTorch's tokens per second


def tatoeba_batches(count: int, config: dict):
    """The first `count` training batches of the bench's pipeline, as numpy, and vocab sizes."""
    corpus = tr.load_corpus(str(TATOEBA), reverse=True, validation_size=HELD_OUT,
                            test_size=HELD_OUT)
    source, target = text_pairs.build_tokenizers(corpus.train, config["max_tokens"],
                                                 corpus.splits, False)
    ids = text_pairs.encode_pairs(corpus.train, source, target, config["max_length"])
    batches = text_pairs.batches(*ids, config["batch_size"], shuffle=True, seed=0).take(count)
    return ([(s.numpy(), t_in.numpy(), t_out.numpy()) for (s, t_in), t_out in batches],
            source.size, target.size)


def keras_tokens_per_second(batches, source_vocab, target_vocab, config) -> float:
    import tensorflow as tf

    model = seq2seq.build_transformer(source_vocab, target_vocab, 64, config["layers"],
                                      config["heads"], config["d_model"], config["ff"],
                                      config["dropout"])
    seq2seq.compile_model(model, len(batches), config["label_smoothing"],
                          config["learning_rate"])

    def dataset(part):
        return tf.data.Dataset.from_generator(
            lambda: (((s, t_in), t_out) for s, t_in, t_out in part),
            output_signature=((tf.TensorSpec([None, None], tf.int32),
                               tf.TensorSpec([None, None], tf.int32)),
                              tf.TensorSpec([None, None], tf.int32)))

    model.fit(dataset(batches[:WARMUP_BATCHES]), verbose=0)
    timed = batches[WARMUP_BATCHES:]
    started = time.perf_counter()
    model.fit(dataset(timed), verbose=0)
    return target_tokens(timed) / (time.perf_counter() - started)


def target_tokens(batches) -> int:
    return int(sum(np.count_nonzero(t_out) for _, _, t_out in batches))


def torch_tokens_per_second(batches, source_vocab, target_vocab, config) -> float:
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    width = config["d_model"]

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.source_embedding = nn.Embedding(source_vocab, width)
            self.target_embedding = nn.Embedding(target_vocab, width)
            self.register_buffer("positions", torch.from_numpy(sine_positions(512, width)))
            block = dict(d_model=width, nhead=config["heads"], dim_feedforward=config["ff"],
                         dropout=config["dropout"], batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**block),
                                                 config["layers"], norm=nn.LayerNorm(width),
                                                 enable_nested_tensor=False)
            self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**block),
                                                 config["layers"], norm=nn.LayerNorm(width))
            self.output = nn.Linear(width, target_vocab)

        def embed(self, embedding, ids):
            return embedding(ids) * math.sqrt(width) + self.positions[: ids.shape[1]]

        def forward(self, source, target_in):
            source_padding = source == text_pairs.PAD
            memory = self.encoder(self.embed(self.source_embedding, source),
                                  src_key_padding_mask=source_padding)
            causal = nn.Transformer.generate_square_subsequent_mask(target_in.shape[1])
            x = self.decoder(self.embed(self.target_embedding, target_in), memory,
                             tgt_mask=causal, tgt_is_causal=True,
                             memory_key_padding_mask=source_padding)
            return self.output(x)

    model = Twin()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    loss_fn = nn.CrossEntropyLoss(ignore_index=text_pairs.PAD,
                                  label_smoothing=config["label_smoothing"])

    def train(part):
        for source, target_in, target_out in part:
            source, target_in = torch.from_numpy(source).long(), torch.from_numpy(target_in).long()
            logits = model(source, target_in)
            loss = loss_fn(logits.reshape(-1, target_vocab),
                           torch.from_numpy(target_out).long().reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            optimizer.step()

    train(batches[:WARMUP_BATCHES])
    timed = batches[WARMUP_BATCHES:]
    started = time.perf_counter()
    train(timed)
    return target_tokens(timed) / (time.perf_counter() - started)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.transformer_speed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=TIMED_BATCHES)
    args = parser.parse_args(argv)
    if not TATOEBA.is_file():
        print(f"skipped: {TATOEBA} is not here")
        return {}
    try:
        import torch  # noqa: F401
    except ImportError:
        print("skipped: torch is not installed (pip install -e '.[bench]')")
        return {}
    config = TRANSFORMER_CONFIG
    batches, source_vocab, target_vocab = tatoeba_batches(WARMUP_BATCHES + args.batches, config)
    ours = keras_tokens_per_second(batches, source_vocab, target_vocab, config)
    theirs = torch_tokens_per_second(batches, source_vocab, target_vocab, config)
    print(f"Transformer training step, {args.batches} Tatoeba batches of {config['batch_size']}"
          f" ({target_tokens(batches[WARMUP_BATCHES:])} target tokens), {THREADS} threads:")
    print(f"  Keras/TensorFlow {ours:,.0f} tokens/s, PyTorch twin {theirs:,.0f} tokens/s:"
          f" {ours / theirs:.2f}x (target >= {SPEED_TARGET:.1f}x)")
    return {"keras_tokens_per_second": ours, "torch_tokens_per_second": theirs,
            "ratio": ours / theirs, "target": SPEED_TARGET, "batches": args.batches,
            "config": config, "path": str(save_results("transformer_speed", {
                "keras_tokens_per_second": ours, "torch_tokens_per_second": theirs,
                "ratio": ours / theirs, "config": config, "batches": args.batches}))}


if __name__ == "__main__":
    main()
