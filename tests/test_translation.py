"""Translation end to end on the generated en-fr corpus: a small model really learns (BLEU on
held-out pairs against an untrained copy), beam search against greedy, the string SavedModel in a
fresh process, LiteRT token for token against Keras, the command line and bad input; no skew
between `evaluate` and the served paths, and the LiteRT runner's Python text handling against
the graph's on real sentences (Tatoeba's too when ../shared/data holds them)."""

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import runner
from apps import translation as tr
from layers.attention import AttentionDecoder
from models import seq2seq
from models.sequence_training import MaskedCrossEntropy, in_float32
from pipelines import DataError, number_corpus, text_pairs
from serving.litert_seq2seq import Seq2SeqLiteRT, Seq2SeqText

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
# Small enough to train in well under a minute on 2 cores, big enough to translate well.
SMALL = {"size": 8000, "epochs": 3}
TEST_SENTENCES = 100
SENTENCES = ["ninety-seven", "Wednesday, May 9, 2018", "seventy-one",
             "four hundred and eighty thousand, three hundred and twelve", "June 16, 2003", ""]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("translation") / "en-fr"
    metrics = tr.train(tr.TrainConfig(**SMALL, run_dir=run_dir, verbose=0))
    return run_dir, metrics


@pytest.fixture(scope="module")
def translator(trained):
    return tr.load_translator(trained[0])


@pytest.fixture(scope="module")
def corpus(trained):
    return tr.corpus_of_run(json.loads((trained[0] / "run.json").read_text()))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model_base = tmp_path_factory.mktemp("saved_models")
    report = tr.export(trained[0], model_base, quiet=True, check_sentences=30)
    return Path(report["saved_model"]), report


# --- learning ---------------------------------------------------------------------------------


def test_small_model_reaches_high_bleu_where_an_untrained_copy_scores_near_zero(
        trained, translator, corpus):
    run_dir, metrics = trained
    assert metrics["test_pairs"] == len(corpus.test) >= 350
    assert metrics["bleu"] >= 85, metrics["bleu_signature"]
    assert metrics["chrf"] >= 90
    assert metrics["exact_match"] >= 0.6  # whole translations right, not only n-grams

    run = json.loads((run_dir / "run.json").read_text())
    untrained = seq2seq.Translator(
        tr.model_of_run(run, translator.source.size, translator.target.size,
                        translator.max_output_length),
        translator.source, translator.target, translator.max_output_length)
    test = corpus.test[:TEST_SENTENCES]
    hypotheses = untrained.translate([s for s, _ in test])
    untrained_bleu = tr.bleu_and_chrf(hypotheses, [t for _, t in test], False)["bleu"]
    assert untrained_bleu <= 5, untrained_bleu
    # No test source sentence was seen in training.
    assert not {s for s, _ in corpus.test} & {s for s, _ in corpus.train}


def test_run_directory_has_what_a_user_looks_at(trained):
    run_dir, _ = trained
    for name in ("history.csv", "training_curves.png", "attention.png", "metrics.json",
                 "evaluation.json", "best.keras", "run.json", "source_vocab.txt",
                 "target_vocab.txt"):
        assert (run_dir / name).is_file(), name
    history = runner.read_history(run_dir)
    assert len(history["epoch"]) == SMALL["epochs"]
    assert history["loss"][-1] < history["loss"][0] / 5
    assert history["val_masked_accuracy"][-1] >= 0.9
    target_vocab = text_pairs.read_vocabulary(run_dir / "target_vocab.txt")
    assert target_vocab[:2] == [text_pairs.START_TOKEN, text_pairs.END_TOKEN]
    assert "quatre" in target_vocab and "mai" in target_vocab
    assert not (run_dir / "backup").exists()
    run = json.loads((run_dir / "run.json").read_text())  # the TrainConfig, flat, and the facts
    assert run["size"] == SMALL["size"] and run["max_tokens"] == [20_000, 20_000]
    assert run["splits"] == ["word", "word"] and run["max_output_length"] > 10
    assert tr.find_run().path == run_dir.resolve()  # runs/translation/LAST: the last trained


def test_length_penalty_is_chosen_on_validation_and_used_by_evaluate(trained):
    run_dir, metrics = trained
    decoding = json.loads((run_dir / "decoding.json").read_text())
    assert [t["alpha"] for t in decoding["validation"]] == list(tr.LENGTH_PENALTIES)
    best = max(decoding["validation"], key=lambda t: t["val_bleu"])
    assert decoding["alpha"] == best["alpha"] and decoding["beam_width"] == tr.BEAM_WIDTH
    assert metrics["alpha"] == decoding["alpha"]  # the test figures were decoded with it
    run = runner.RunDir(run_dir)
    assert tr.decoding_of(run, None, None) == (tr.BEAM_WIDTH, decoding["alpha"])
    assert tr.decoding_of(run, 1, 0.0) == (1, 0.0)  # --beam-width / --alpha win


def test_config_checks_choices_and_reads_one_or_two_vocabulary_sizes():
    assert tr.TrainConfig(max_tokens=[500]).max_tokens == (500, 500)
    assert tr.TrainConfig(max_tokens=[500, 300]).max_tokens == (500, 300)
    assert tr.TrainConfig(max_tokens=700).max_tokens == (700, 700)
    with pytest.raises(runner.UsageError, match="--max-tokens"):
        tr.TrainConfig(max_tokens=[1, 2, 3])
    with pytest.raises(runner.UsageError, match="--cell rnn"):
        tr.TrainConfig(cell="rnn")
    with pytest.raises(runner.UsageError, match="--attention dot"):
        tr.TrainConfig(attention="dot")


# --- decoding -----------------------------------------------------------------------------------


def test_beam_search_never_scores_lower_than_greedy(translator, corpus):
    sentences = [s for s, _ in corpus.test[:TEST_SENTENCES]]
    greedy = translator.best_ids(sentences, beam_width=1, alpha=0.0)
    beam = translator.best_ids(sentences, beam_width=4, alpha=0.0)
    assert np.all(beam["log_probs"] >= greedy["log_probs"] - 1e-4)
    # A model score is what it is: recompute it by teacher forcing the chosen tokens.
    for i in range(3):
        tokens = beam["tokens"][i][: beam["lengths"][i]]
        source = translator.source_ids(tf.constant([sentences[i]]))
        target_in = tf.constant([[text_pairs.START, *tokens[:-1]]])
        log_probs = tf.nn.log_softmax(translator.model((source, target_in)))[0].numpy()
        assert log_probs[np.arange(len(tokens)), tokens].sum() == pytest.approx(
            beam["log_probs"][i], abs=1e-3)


def test_compiled_width_one_equals_the_eager_token_loop(translator, corpus):
    sentences = [s for s, _ in corpus.test[:16]]
    ids = translator.source_ids(tf.constant(sentences))
    compiled = translator.compiled_search(1, 0.0)(ids)["tokens"][:, 0].numpy()
    eager = translator.eager_greedy(ids)
    np.testing.assert_array_equal(compiled[:, : eager.shape[1]], eager)
    assert not compiled[:, eager.shape[1]:].any()


def test_decoder_steps_match_teacher_forcing_for_lstm_bahdanau():
    decoder = AttentionDecoder(30, 8, 16, cell="lstm", attention="bahdanau")
    memory = tf.random.stateless_normal([2, 5, 12], seed=[1, 2])
    mask = tf.constant([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], tf.float32)
    state = [tf.random.stateless_normal([2, 16], seed=[3, i]) for i in range(2)]
    tokens = tf.constant([[2, 5, 9, 4], [2, 7, 7, 8]])
    full, weights = decoder(tokens, memory, mask, state, return_attention=True)
    keys = decoder.prepare_memory(memory)
    for t in range(4):
        log_probs, state, step_weights = decoder.step(tokens[:, t], state, memory, keys, mask)
        np.testing.assert_allclose(log_probs, tf.nn.log_softmax(full[:, t]), atol=1e-5)
        np.testing.assert_allclose(step_weights, weights[:, t], atol=1e-6)
    assert np.all(weights.numpy()[0, :, 3:] == 0)  # padding gets no attention


def test_two_layer_lstm_bahdanau_variant_trains(corpus):
    source, target = text_pairs.build_tokenizers(corpus.train[:300], (500, 500),
                                                 ("word", "word"), False)
    ids = text_pairs.encode_pairs(corpus.train[:300], source, target, 40)
    model = seq2seq.build_model(source.size, target.size, 16, 16, num_layers=2, cell="lstm",
                           attention="bahdanau", dropout=0.1)
    seq2seq.compile_model(model, steps=40, label_smoothing=0.1, learning_rate=1e-2)
    one_batch = text_pairs.batches(*ids, 32).take(1).cache()
    history = model.fit(one_batch, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len([layer for layer in model.get_layer("encoder").rnns]) == 2


class StepLosses(keras.callbacks.Callback):
    """The loss of each training batch (Keras logs the epoch's running mean; equal batches)."""

    def on_train_begin(self, logs=None):
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    @property
    def losses(self):
        return [(k + 1) * m - k * previous
                for k, (m, previous) in enumerate(zip(self.means, [0.0, *self.means]))]


def test_mirrored_strategy_on_two_cpus_matches_one_device_for_three_steps():
    """Two replicas, each with half of the same global batch of 32: the same loss at each of
    the first 3 steps and the same weights after them as one device. The replicas' slices hold
    different numbers of real tokens and the gradients are big enough to be clipped, so this
    needs the loss over the whole batch's tokens and the clipping of the summed gradient."""
    corpus = tr.load_corpus(size=1200)
    source, target = text_pairs.build_tokenizers(corpus.train, (300, 300), corpus.splits, False)
    ids = text_pairs.encode_pairs(corpus.train, source, target, 40)
    three = text_pairs.batches(*ids, 32, multiple_of=2).take(3)
    assert [int(s.shape[0]) for (s, _), _ in three] == [32, 32, 32]

    def three_steps(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():  # as `train` builds it, with the same rate on both sides
            model = seq2seq.build_model(source.size, target.size, 16, 16)
            seq2seq.compile_model(model, steps=3, learning_rate=1e-2)
        steps = StepLosses()
        model.fit(three, verbose=0, callbacks=[steps])
        return steps.losses, [w.numpy() for w in model.weights]

    mirrored = runner.choose_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    single_losses, single_weights = three_steps(tf.distribute.get_strategy())
    mirrored_losses, mirrored_weights = three_steps(mirrored)
    assert len(single_losses) == 3 and single_losses[2] < single_losses[0]  # it trains
    assert mirrored_losses == pytest.approx(single_losses, rel=1e-5)
    for single, replicated in zip(single_weights, mirrored_weights, strict=True):
        np.testing.assert_allclose(single, replicated, atol=1e-5)


def test_mixed_precision_trains_with_masked_attention_and_decodes_in_float32(tmp_path):
    """`--mixed-precision` (float16 on GPUs): masked attention scores stay finite in float16
    (0 * -inf there would be NaN), and the checkpoint, loaded in the same process, decodes in
    float32 as the beam search, the export and the phones need."""
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, 30, size=n).astype("int32") for n in rng.integers(2, 9, 64)]
    targets = [np.concatenate([[text_pairs.START], rng.integers(4, 30, size=n),
                               [text_pairs.END]]).astype("int32")
               for n in rng.integers(2, 9, 64)]
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = seq2seq.build_model(30, 30, 8, 8)
        seq2seq.compile_model(model, steps=4, learning_rate=1e-2)
        losses = model.fit(text_pairs.batches(sources, targets, 32), epochs=2,
                           verbose=0).history["loss"]
        assert np.all(np.isfinite(losses)) and losses[1] < losses[0]
        model.save(tmp_path / "best.keras")
        loaded = in_float32(keras.saving.load_model(tmp_path / "best.keras", compile=False))
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.get_layer("decoder").embedding.compute_dtype == "float16"
    assert {layer.compute_dtype for layer in loaded._flatten_layers()} == {"float32"}
    # + pad and UNK: 28 ids
    vocabulary = [text_pairs.START_TOKEN, text_pairs.END_TOKEN, *[f"w{i}" for i in range(26)]]
    tokenizer = text_pairs.Tokenizer(vocabulary, "word", False)
    translator = seq2seq.Translator(loaded, tokenizer, tokenizer, 12)
    found = translator.search(tf.constant([[5, 6, 7, 0]], tf.int32), beam_width=2)
    assert found["scores"].dtype == tf.float32 and np.isfinite(found["scores"].numpy()).all()


def test_masked_loss_ignores_padding_and_smooths_labels():
    logits = tf.random.stateless_normal([2, 3, 5], seed=[0, 1])
    labels = tf.constant([[1, 2, 0], [3, 0, 0]])
    loss = MaskedCrossEntropy()(labels, logits)
    nll = -tf.nn.log_softmax(logits).numpy()
    expected = (nll[0, 0, 1] + nll[0, 1, 2] + nll[1, 0, 3]) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    changed = tf.tensor_scatter_nd_update(logits, [[0, 2, 0], [1, 1, 4]], [50.0, -50.0])
    assert float(MaskedCrossEntropy()(labels, changed)) == pytest.approx(expected, rel=1e-5)
    assert float(MaskedCrossEntropy(0.1)(labels, logits)) != pytest.approx(expected)


# --- serving -------------------------------------------------------------------------------------


def test_string_savedmodel_in_a_fresh_process_translates_as_in_process(exported, translator):
    version_dir, _ = exported
    script = (
        "import json, sys, tensorflow as tf\n"
        f"model = tf.saved_model.load({str(version_dir)!r})\n"
        "serve = model.signatures['serving_default']\n"
        "out = serve(sentences=tf.constant(json.loads(sys.argv[1])))\n"
        "print(json.dumps([t.decode() for t in out['translation'].numpy().tolist()]))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script, json.dumps(SENTENCES)],
                               capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    served = json.loads(completed.stdout.strip().splitlines()[-1])
    assert served == translator.translate(SENTENCES)
    assert served[1] == "mercredi 9 mai 2018" and served[-1] == ""


def test_litert_greedy_decode_matches_keras_token_for_token(exported, translator, corpus):
    version_dir, report = exported
    extra = version_dir / "assets.extra"
    for variant in tr.LITE_VARIANTS:
        assert (extra / f"translation_{variant}.tflite").is_file()
    assert report["float32"]["same_tokens_as_keras_greedy"] == 1.0
    assert report["dynamic"]["same_tokens_as_keras_greedy"] >= 0.8
    assert report["float16"]["bytes"] < 0.6 * report["float32"]["bytes"]
    lite = Seq2SeqLiteRT(extra / "translation_float32.tflite")
    sentences = [s for s, _ in corpus.test[30:50]] + SENTENCES[:3]
    for sentence in sentences:
        keras_greedy = translator.best_ids([sentence], beam_width=1, alpha=0.0)
        tokens = lite.greedy_ids(lite.source_ids(sentence))
        assert tokens == list(keras_greedy["tokens"][0][: keras_greedy["lengths"][0]])
    assert lite.translate("Wednesday, May 9, 2018") == "mercredi 9 mai 2018"


def test_litert_runner_needs_no_tensorflow_and_reports_too_long_input(exported):
    version_dir, _ = exported
    model = version_dir / "assets.extra" / "translation_float32.tflite"
    script = (
        "import sys\n"
        "from serving.litert_seq2seq import main\n"
        "try:\n"
        f"    main([{str(model)!r}, 'Friday, March 27, 1992'])\n"
        "finally:\n"
        "    assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               cwd=PROJECT, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "vendredi 27 mars 1992"
    too_long = " ".join(["ninety-seven"] * 20)  # 60 tokens, the static length is 40
    completed = subprocess.run([sys.executable, "-m", "serving.litert_seq2seq", str(model),
                                too_long], capture_output=True, text=True, cwd=PROJECT,
                               timeout=120)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "60 tokens" in lines[0] and "40" in lines[0], lines


def test_python_standardisation_matches_the_graph(exported):
    version_dir, _ = exported
    lite = Seq2SeqLiteRT(version_dir / "assets.extra" / "translation_float32.tflite")
    texts = ["¿Qué tal?  Très\u00a0bien, merci!", "Mittwoch, 9. Mai 2018", "(l'homme) «x» - y",
             "tab\there", "  ninety-seven  "]
    graph = [t.decode() for t in text_pairs.standardize(tf.constant(texts)).numpy()]
    assert [lite.standardize(t) for t in texts] == graph
    assert graph[0] == "¿ Qué tal ? Très bien , merci !"
    ids = lite.source_ids("ninety-seven")  # ninety - seven
    assert ids.shape == (1, 40) and ids[0, 2] > 1 and not ids[0, 3:].any()


def test_export_layout(exported):
    version_dir, report = exported
    assert version_dir.name == "1" and (version_dir / "saved_model.pb").is_file()
    extra = version_dir / "assets.extra"
    config = json.loads((extra / "litert.json").read_text())
    assert config["signatures"] == ["encode", "decode_step"] and config["source_length"] == 40
    assert (extra / "source_vocab.txt").is_file() and (extra / "tflite_report.json").is_file()
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".incomplete")]


# --- train/serve skew ----------------------------------------------------------------------------

# What a LiteRT file may lose against the Keras greedy decode: float32 runs the same float
# arithmetic (nothing); float16 weights and int8 ("dynamic") weights may flip a near tie.
LITE_LOSS = {"float32": {"sacreBLEU": 0.0, "exact match": 0.0},
             "float16": {"sacreBLEU": 0.5, "exact match": 0.01},
             "dynamic": {"sacreBLEU": 1.0, "exact match": 0.02}}


def test_every_served_path_reproduces_evaluates_figures(trained, exported):
    """The test split sent as a client sends it (decomposed Unicode) to serving_default, to
    `translate --file` and to each LiteRT file: the SavedModel and the CLI score what `evaluate`
    scores (beam 4), each LiteRT file what `evaluate --beam-width 1` scores, within LITE_LOSS."""
    (run_dir, metrics), (version_dir, _) = trained, exported
    rows = tr.served_figures(version_dir, run_dir)
    figures = {(row["path"], row["figure"]): row["value"] for row in rows}
    assert rows[0]["path"] == "evaluate (Keras)" and len(figures) == len(rows) == 14
    assert {row["examples"] for row in rows} == {metrics["test_pairs"]}
    assert figures["evaluate (Keras)", "test sacreBLEU (beam 4)"] == metrics["bleu"]
    assert figures["evaluate (Keras)", "test exact match (beam 4)"] == metrics["exact_match"]
    for figure in ("sacreBLEU", "exact match"):
        beam = figures["evaluate (Keras)", f"test {figure} (beam 4)"]
        assert figures["SavedModel serving_default", f"test {figure} (beam 4)"] == beam
        assert figures["CLI translate --file", f"test {figure} (beam 4)"] == beam
        greedy = figures["evaluate --beam-width 1 (Keras)", f"test {figure} (greedy)"]
        for variant, loss in LITE_LOSS.items():
            lite = figures[f"LiteRT {variant}", f"test {figure} (greedy)"]
            assert greedy - loss[figure] <= lite <= greedy + loss[figure], (variant, figure)
    assert figures["evaluate (Keras)", "test sacreBLEU (beam 4)"] >= figures[
        "evaluate --beam-width 1 (Keras)", "test sacreBLEU (greedy)"]  # the beam pays off


def untrained_run(run_dir: Path, pairs, splits) -> Path:
    """A run directory as `train` leaves one, with an untrained model: enough to load and serve."""
    source, target = text_pairs.build_tokenizers(pairs, (20_000, 20_000), splits, False)
    keras.utils.set_random_seed(5)
    run_dir.mkdir()
    seq2seq.build_model(source.size, target.size, 16, 16).save(run_dir / "best.keras")
    text_pairs.write_vocabulary(run_dir / "source_vocab.txt", source.vocabulary)
    text_pairs.write_vocabulary(run_dir / "target_vocab.txt", target.vocabulary)
    (run_dir / "run.json").write_text(json.dumps({"lowercase": False, "splits": list(splits),
                                                  "max_output_length": 12}))
    return run_dir


def test_decomposed_accents_translate_as_composed_ones_on_every_path(tmp_path):
    """"février" typed as "fe" + U+0301 + "vrier" (macOS, some keyboards): serving_default
    normalises in its graph (`text_pairs.nfc`) as the CLI and the LiteRT runner do, so both
    forms get the same translation and score. An untrained fr-en model will do: a word read
    as unknown changes its scores."""
    corpus = tr.load_corpus(pair="fr-en", size=2000)
    run_dir = untrained_run(tmp_path / "fr-en", corpus.train, corpus.splits)
    composed = [s for s, _ in corpus.test if unicodedata.normalize("NFD", s) != s]
    decomposed = [unicodedata.normalize("NFD", s) for s in composed]
    translator = tr.load_translator(run_dir)
    assert len(composed) >= 10 and translator.source.normalize
    ids = [[row.tolist() for row in translator.source.id_lists(texts)]
           for texts in (composed, decomposed)]
    assert ids[0] == ids[1] and text_pairs.UNK not in sum(ids[0], [])
    unnormalised = text_pairs.Tokenizer(translator.source.vocabulary, "word")  # the graph before
    assert text_pairs.UNK in unnormalised.id_lists(decomposed)[0]
    seq2seq.serving_archive(translator).write_out(str(tmp_path / "1"), verbose=False)
    serve = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]
    served = [serve(sentences=tf.constant(texts)) for texts in (composed, decomposed)]
    assert served[0]["translation"].numpy().tolist() == served[1]["translation"].numpy().tolist()
    np.testing.assert_array_equal(served[0]["score"], served[1]["score"])
    cli = tr.translate(decomposed, run_dir)
    assert cli == [t.decode() for t in served[0]["translation"].numpy()]


def real_sentence_pairs():
    """Each generated direction (real number and date words from num2words and babel), and
    Tatoeba's Spanish and Vietnamese pairs (stacked diacritics) when ../shared/data has them."""
    for pair in number_corpus.PAIRS:
        yield pytest.param(pair, id=pair)
    for name in ("tatoeba-spa-eng/spa-eng.zip", "tatoeba-vie-eng/vie-eng.zip"):
        for reverse in (False, True):  # English first in the file; --reverse reads it back
            yield pytest.param((SHARED_DATA / name, reverse),
                               id=name.split("/")[0] + ("-reversed" if reverse else ""))


@pytest.mark.parametrize("data", real_sentence_pairs())
def test_litert_text_side_equals_the_graph_on_real_sentences(data, tmp_path):
    """The LiteRT runner's Python (NFC, standardisation, split, lookup; detokenisation) against
    what the exported graph runs (`text_pairs.nfc`, `standardize`, TextVectorization; the
    target tokenizer's `text`), on real sentences as written and decomposed (NFD): same ids,
    same text. Vocabularies come from half the pairs, so the rest brings unknown words."""
    if isinstance(data, tuple):
        if not data[0].is_file():
            pytest.skip(f"{data[0]} is not here")
        pairs, splits = text_pairs.read_pairs(*data)[::5][:6000], ("word", "word")
    else:
        corpus = tr.load_corpus(pair=data, size=2000)
        pairs, splits = corpus.train + corpus.test, corpus.splits
    for lowercase in (False, True):
        source, target = text_pairs.build_tokenizers(pairs[::2], (20_000, 20_000), splits,
                                                     lowercase)
        text_pairs.write_vocabulary(tmp_path / "source_vocab.txt", source.vocabulary)
        text_pairs.write_vocabulary(tmp_path / "target_vocab.txt", target.vocabulary)
        (tmp_path / "litert.json").write_text(json.dumps(seq2seq.text_config(splits, lowercase)))
        python = Seq2SeqText(tmp_path)
        graph = text_pairs.Tokenizer(source.vocabulary, splits[0], lowercase, normalize=True)
        sentences = [s for s, _ in pairs]
        sentences += [unicodedata.normalize("NFD", s) for s in sentences]
        assert [ids.tolist() for ids in graph.id_lists(sentences)] == [
            python.token_ids(s) for s in sentences]
        target_ids = [[text_pairs.START, *ids, text_pairs.END]
                      for ids in target.id_lists([t for _, t in pairs])]
        texts = target.text(tf.ragged.constant(target_ids).to_tensor()).numpy()
        assert [t.decode() for t in texts] == [python.detokenize(ids) for ids in target_ids]


# --- command line --------------------------------------------------------------------------------


def test_translate_command_prints_one_line_per_sentence(trained, tmp_path, capsys):
    run_dir, _ = trained
    tr.main(["translate", "--run-dir", str(run_dir), "Wednesday, May 9, 2018", "seventy-one"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mercredi 9 mai 2018" and len(lines) == 2
    sentences = tmp_path / "in.txt"
    sentences.write_text("June 16, 2003\n\nninety-seven\n")
    tr.main(["translate", "--run-dir", str(run_dir), "--file", str(sentences)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0] == "16 juin 2003" and lines[1] == ""


def test_evaluate_command_prints_bleu_and_examples(trained, capsys):
    run_dir, metrics = trained
    tr.main(["evaluate", "--run-dir", str(run_dir), "--beam-width", "2"])
    out = capsys.readouterr().out
    assert "sacreBLEU" in out and "chrF" in out and "reference" in out
    figures = json.loads((run_dir / "evaluation.json").read_text())
    assert figures["beam_width"] == 2 and figures["bleu"] >= 80


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(tr.main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_bad_input_is_one_line_and_exit_status_2(tmp_path, trained, capsys):
    no_tab = tmp_path / "pairs.tsv"
    no_tab.write_text("Hola.\tHello.\nAdiós sin tabulador\n")
    code, err = run_cli(["train", "--data", str(no_tab), "--run-dir", str(tmp_path / "r")],
                        capsys)
    assert code == 2 and err == [f"error: {no_tab}:2: no tab between source and target sentence"]
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"Hola.\tHello.\n" + "Adiós\tGoodbye.\n".encode("latin-1"))
    code, err = run_cli(["translate", "--run-dir", str(trained[0]), "--file", str(bad)], capsys)
    assert code == 2 and len(err) == 1 and f"{bad}:2: not UTF-8" in err[0]
    code, err = run_cli(["evaluate", "--run-dir", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "run `train` first" in err[0]
    code, err = run_cli(["translate", "--run-dir", str(trained[0])], capsys)
    assert code == 2 and "give sentences or --file" in err[0]
    with pytest.raises(DataError, match="--pair en-it"):
        tr.load_corpus(pair="en-it")


def test_help_describes_every_command(capsys):
    for command in ([], ["train"], ["evaluate"], ["translate"], ["export"]):
        with pytest.raises(SystemExit):
            tr.parse_args([*command, "--help"])
        assert "usage: python -m apps.translation" in capsys.readouterr().out
    keras.backend.clear_session()
