"""The Transformer of `layers/transformer.py` and `translation --model transformer`: the causal
mask, the cached step against the full forward pass and against a decoder that recomputes its
prefix, MirroredStrategy against one device, exact resume, SavedModel and LiteRT."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import runner
from apps import translation as tr
from layers.transformer import RecomputingDecoder, TransformerDecoder, TransformerEncoder
from models import seq2seq
from pipelines import text_pairs
from tests.test_translation import StepLosses

VOCAB, STEPS = 40, 12
TINY = {"layers": 2, "heads": 4, "width": 32, "hidden": 64, "dropout": 0.0}
# Small enough to train in about 40 s on 2 cores, big enough to translate well.
SMALL = {"model": "transformer", "size": 6000, "epochs": 4, "layers": 2, "d_model": 128,
         "ff": 256, "learning_rate": 2e-3}


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(3)
    encoder = TransformerEncoder(VOCAB, 64, **TINY)
    decoder = TransformerDecoder(VOCAB, STEPS, **TINY)
    source = np.random.default_rng(0).integers(1, VOCAB, (3, 7)).astype("int32")
    source[0, 5:] = text_pairs.PAD  # one padded sentence
    target = np.random.default_rng(1).integers(1, VOCAB, (3, STEPS)).astype("int32")
    memory, mask, _ = encoder(source)
    return decoder, memory, mask, target


def test_causal_mask_later_tokens_do_not_change_earlier_outputs(tiny):
    decoder, memory, mask, target = tiny
    changed = target.copy()
    changed[:, 6:] = (changed[:, 6:] + 1) % VOCAB
    before, after = decoder(target, memory, mask), decoder(changed, memory, mask)
    np.testing.assert_array_equal(before[:, :6], after[:, :6])
    assert np.abs(before[:, 6:] - after[:, 6:]).max() > 1e-3  # and later ones do


def test_padding_in_the_source_is_not_attended_to(tiny):
    decoder, memory, mask, target = tiny
    _, weights = decoder(target, memory, mask, return_attention=True)  # [B, heads, T, S]
    assert np.abs(weights[0, :, :, 5:]).max() == 0
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0, rtol=1e-5)


def test_cached_step_equals_the_full_forward_pass_at_every_position(tiny):
    decoder, memory, mask, target = tiny
    full = tf.nn.log_softmax(decoder(target, memory, mask))
    keys, state = decoder.prepare_memory(memory), decoder.start_state(memory)
    for t in range(STEPS):
        log_probs, state, _ = decoder.step(tf.constant(target[:, t]), state, memory, keys, mask)
        np.testing.assert_allclose(log_probs, full[:, t], atol=1e-5)
    assert int(state[1][0]) == STEPS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("translation") / "transformer"
    metrics = tr.train(tr.TrainConfig(**SMALL, run_dir=run_dir, verbose=0))
    return run_dir, metrics


@pytest.fixture(scope="module")
def translator(trained):
    return tr.load_translator(trained[0])


def test_small_transformer_translates_held_out_pairs(trained):
    _, metrics = trained
    assert metrics["bleu"] >= 85, metrics  # an untrained copy scores about 0


def test_cached_beam_search_gives_the_tokens_of_one_that_recomputes_the_prefix(translator):
    sentences = tr.load_corpus(size=SMALL["size"]).test[:24]
    uncached = copy.copy(translator)
    uncached.decoder, uncached._compiled = RecomputingDecoder(translator.decoder), {}
    for width in (1, 4):
        cached = translator.best_ids([s for s, _ in sentences], beam_width=width)
        again = uncached.best_ids([s for s, _ in sentences], beam_width=width)
        np.testing.assert_array_equal(cached["tokens"], again["tokens"])
        np.testing.assert_allclose(cached["scores"], again["scores"], atol=1e-4)


def test_mirrored_strategy_on_two_cpus_matches_one_device_for_three_steps():
    corpus = tr.load_corpus(size=1200)
    source, target = text_pairs.build_tokenizers(corpus.train, (300, 300), corpus.splits, False)
    ids = text_pairs.encode_pairs(corpus.train, source, target, 40)
    three = text_pairs.batches(*ids, 32, multiple_of=2).take(3)

    def three_steps(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = seq2seq.build_transformer(source.size, target.size, 60, layers=1, heads=2,
                                              d_model=16, ff=32, dropout=0.0)
            seq2seq.compile_model(model, steps=3, learning_rate=1e-2)
        steps = StepLosses()
        model.fit(three, verbose=0, callbacks=[steps])
        return steps.losses, [w.numpy() for w in model.weights]

    mirrored = runner.choose_strategy("mirrored")
    single_losses, single_weights = three_steps(tf.distribute.get_strategy())
    mirrored_losses, mirrored_weights = three_steps(mirrored)
    assert len(single_losses) == 3 and single_losses[2] < single_losses[0]
    assert mirrored_losses == pytest.approx(single_losses, rel=1e-5)
    for single, replicated in zip(single_weights, mirrored_weights, strict=True):
        np.testing.assert_allclose(single, replicated, atol=1e-5)


def test_training_killed_mid_epoch_resumes_exactly(tmp_path, kill_after_backup):
    def train(run_dir):
        return tr.train(tr.TrainConfig(**(SMALL | {"size": 500, "epochs": 2, "layers": 1,
                                                   "heads": 2, "d_model": 16, "ff": 32}),
                                       run_dir=run_dir, verbose=0, backup_every=1,
                                       evaluate_after=False))

    uninterrupted = train(tmp_path / "whole")
    kill_after_backup(lambda: train(tmp_path / "run"), epoch=1, batch=3)
    resumed = train(tmp_path / "run")
    assert resumed["steps"] == uninterrupted["steps"]
    assert (tmp_path / "run/history.csv").read_text() == \
        (tmp_path / "whole/history.csv").read_text()
    weights = [keras.saving.load_model(d / "best.keras", compile=False).get_weights()
               for d in (tmp_path / "whole", tmp_path / "run")]
    for one, two in zip(*weights, strict=True):
        np.testing.assert_array_equal(one, two)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model_base = tmp_path_factory.mktemp("saved_models")
    return tr.export(trained[0], model_base, quiet=True)


def test_savedmodel_and_litert_translate_as_keras(exported, translator):
    from serving.litert_seq2seq import Seq2SeqLiteRT

    sentences = [s for s, _ in tr.load_corpus(size=SMALL["size"]).test[:50]]
    served = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"]
    texts = served(sentences=tf.constant(sentences))["translation"].numpy()
    assert [t.decode() for t in texts] == translator.translate(sentences)
    greedy = translator.best_ids(sentences, beam_width=1)
    extra = tr.Path(exported["saved_model"]) / "assets.extra"
    for variant in ("float32", "dynamic"):
        lite = Seq2SeqLiteRT(extra / f"translation_{variant}.tflite")
        same = [lite.greedy_ids(lite.source_ids(s)) == list(tokens[:length])
                for s, tokens, length in zip(sentences, greedy["tokens"], greedy["lengths"])]
        assert sum(same) == len(sentences), (variant, sum(same))
