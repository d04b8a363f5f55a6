"""The fast tier (`make test-fast`): every model of every app, at a tiny size, is built, takes one
training steps that change its weights, goes through a `.keras` round trip with the same outputs,
and exports the signatures a server or a phone calls. Plus: checkpoints saved by the code before
the models moved to `models/` still load and compute what they computed then.

Quality is judged elsewhere (each app's tests and benchmarks); here a model that cannot be built,
trained a step, saved, loaded or exported fails in seconds.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.fast

LEGACY = Path(__file__).parent / "fixtures" / "checkpoints_v0"


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v) for v in model.trainable_variables]


def assert_training_steps_move_weights(model: keras.Model, x, y=None) -> None:
    """Two steps: the sequence models' warm-up starts from a learning rate of zero."""
    before = weights_of(model)
    batch = x if y is None else (x, y)  # an unsupervised model's batch is its rows alone
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(2), verbose=0)
    after = weights_of(model)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "no weight moved"
    assert all(np.isfinite(a).all() for a in after)


def assert_round_trip(model: keras.Model, inputs, path: Path) -> keras.Model:
    model.save(path)
    reloaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), rtol=1e-5, atol=1e-6)
    return reloaded


def signatures_of(archive, directory: Path) -> dict:
    """Writes an ExportArchive out and loads it back as TensorFlow Serving would."""
    archive.write_out(str(directory), verbose=False)
    return tf.saved_model.load(str(directory)).signatures


# ---------------------------------------------------------------------------------------------
# Digit OCR: LeNet-5 (classic and modern), DBN, DSN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["lenet5", "lenet5-modern", "dbn"])
def test_digit_classifiers_train_a_step_round_trip_and_export(model_name, tmp_path):
    from apps import digit_ocr

    keras.utils.set_random_seed(0)
    config = digit_ocr.TrainConfig(model=model_name, dbn_units=(16, 8))
    model = digit_ocr.compile_model(digit_ocr.build_model(model_name, 10, config), steps=4,
                                    model_name=model_name)
    pixels = np.random.default_rng(0).random((8, 32, 32, 1), dtype=np.float32)
    assert_training_steps_move_weights(model, pixels, np.arange(8) % 10)
    reloaded = assert_round_trip(model, pixels, tmp_path / "model.keras")

    signatures = signatures_of(digit_ocr.serving_archive(reloaded), tmp_path / "1")
    assert set(signatures) == {"serving_default", digit_ocr.TFLITE_SIGNATURE}
    out = signatures[digit_ocr.TFLITE_SIGNATURE](pixels=tf.constant(pixels))
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               model.predict(pixels, verbose=0), rtol=1e-5, atol=1e-6)
    png = tf.io.encode_png(tf.cast(pixels[0, 2:30, 2:30] * 255, tf.uint8))
    served = signatures["serving_default"](images=tf.stack([png, png]))
    assert served["digit"].shape == (2,) and served["probabilities"].shape == (2, 10)


def test_dsn_solves_a_module_and_round_trips(tmp_path):
    from apps import digit_ocr

    keras.utils.set_random_seed(0)
    config = digit_ocr.TrainConfig(model="dsn", dsn_modules=2, dsn_units=16)
    dsn = digit_ocr.build_model("dsn", 10, config)
    rng = np.random.default_rng(0)
    pixels = rng.random((32, 32, 32, 1), dtype=np.float32)
    batches = tf.data.Dataset.from_tensor_slices(
        (pixels, tf.one_hot(np.arange(32) % 10, 10))).batch(16)
    for k in range(2):
        dsn.fit_module(k, batches, refine_epochs=1, verbose=0)
    assert_round_trip(dsn, pixels, tmp_path / "dsn.keras")


# ---------------------------------------------------------------------------------------------
# Fraud: dense autoencoder, VAE, RBM free energy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["autoencoder", "vae", "rbm"])
def test_anomaly_detectors_train_a_step_round_trip_and_export(model_name, tmp_path):
    from apps import fraud
    from models import anomaly
    from pipelines import tabular

    keras.utils.set_random_seed(0)
    schema = tabular.Schema(("amount", "hour", "distance"), log_features=("amount",))
    rows = np.random.default_rng(0).gamma(2.0, 1.0, (64, 3)).astype("float32")
    detector = anomaly.build_detector(model_name, schema.features, schema.log_features, rows)
    if model_name == "rbm":  # trained by contrastive divergence on standardised rows
        trainer = anomaly.rbm_trainer(detector, learning_rate=0.05)
        before = weights_of(detector)
        trainer.fit(detector.standardize(rows), epochs=1, batch_size=32, verbose=0)
        assert any(not np.array_equal(a, b) for a, b in zip(before, weights_of(detector)))
    else:
        detector.compile(optimizer=keras.optimizers.Adam(1e-2))
        assert_training_steps_move_weights(detector, rows)
    reloaded = assert_round_trip(detector, rows, tmp_path / "detector.keras")

    signatures = signatures_of(fraud.serving_archive(reloaded, schema, threshold=1.0),
                               tmp_path / "1")
    assert {"serving_default", fraud.STANDARDIZED_SIGNATURE} <= set(signatures)
    served = signatures["serving_default"](
        **{fraud.input_name(name): tf.constant(rows[:5, i]) for i, name in
           enumerate(schema.features)})
    np.testing.assert_allclose(served["score"].numpy(), anomaly.score(detector, rows[:5]),
                               rtol=1e-4, atol=1e-4)
    assert served["is_anomaly"].dtype == tf.bool


# ---------------------------------------------------------------------------------------------
# Image generation: DCGAN and conditional GAN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["dcgan", "cgan"])
def test_gans_train_a_step_round_trip_and_export(model_name, tmp_path):
    from apps import gan
    from models import dcgan

    keras.utils.set_random_seed(0)
    model = dcgan.build_gan(model_name, filters=4).compile()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 28, 28, 1)).astype("float32")
    labels = np.arange(8, dtype="int32") % 10
    before = [weights_of(model.generator), weights_of(model.discriminator)]
    model.fit(tf.data.Dataset.from_tensors((images, labels)), verbose=0)
    for network, old in zip((model.generator, model.discriminator), before):
        assert any(not np.array_equal(a, b) for a, b in zip(old, weights_of(network)))
    noise = rng.standard_normal((4, dcgan.LATENT_DIM)).astype("float32")
    inputs = [noise, labels[:4]] if model_name == "cgan" else noise
    reloaded = assert_round_trip(model.generator, inputs, tmp_path / "generator.keras")

    signatures = signatures_of(gan.serving_archive(reloaded, model_name == "cgan"),
                               tmp_path / "1")
    assert set(signatures) == {"serving_default", "generate_png"}
    served = signatures["serving_default"](
        **{"noise": tf.constant(noise)} | ({"label": tf.constant(labels[:4])}
                                           if model_name == "cgan" else {}))
    expected = dcgan.sample_frames(model.generator, noise,
                                   labels[:4] if model_name == "cgan" else None)
    assert np.abs(served["images"].numpy().astype(int) - expected.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------
# Translation: the attention encoder-decoder; captioning: CNN encoder + attention or plain LSTM
# ---------------------------------------------------------------------------------------------

PAIRS = [("one two three", "un deux trois"), ("two three", "deux trois"),
         ("three one", "trois un"), ("one", "un")] * 4


@pytest.mark.parametrize("cell, attention", [("gru", "luong"), ("lstm", "bahdanau")])
def test_seq2seq_trains_a_step_round_trips_and_exports_server_and_phone_signatures(
        cell, attention, tmp_path):
    from apps import translation
    from models import seq2seq
    from pipelines import text_pairs

    keras.utils.set_random_seed(0)
    source, target = text_pairs.build_tokenizers(PAIRS, (50, 50), ("word", "word"), False)
    model = seq2seq.build_model(source.size, target.size, embedding_dim=8, units=8, cell=cell,
                                attention=attention)
    seq2seq.compile_model(model, steps=4)
    (x, y), = text_pairs.batches(*text_pairs.encode_pairs(PAIRS, source, target), 16).take(1)
    assert_training_steps_move_weights(model, x, y)
    reloaded = assert_round_trip(model, x, tmp_path / "model.keras")

    translator = seq2seq.Translator(reloaded, source, target, max_output_length=6)
    signatures = signatures_of(translation.serving_archive(translator, beam_width=2),
                               tmp_path / "1")
    served = signatures["serving_default"](sentences=tf.constant(["one two", "three"]))
    assert served["translation"].shape == (2,)
    lite = signatures_of(translation.lite_archive(translator, source_length=5), tmp_path / "lite")
    assert {"encode", "decode_step"} <= set(lite)
    encoded = lite["encode"](source=tf.constant([[1, 2, 0, 0, 0]], tf.int32))
    assert encoded["memory"].shape == (1, 5, 16)


@pytest.mark.parametrize("decoder", ["attention", "show-and-tell"])
def test_captioner_trains_a_step_round_trips_and_exports(decoder, tmp_path):
    from models import captioner
    from models.sequence_training import compile_teacher_forced
    from pipelines import captions as caption_data

    keras.utils.set_random_seed(0)
    captions = ["a red circle", "a blue square", "two red squares", "a blue circle"]
    tokenizer = caption_data.build_tokenizer(captions, max_tokens=100)
    model = captioner.build_model(tokenizer.size, decoder, image_size=16, embedding_dim=8,
                                  units=8, filters=(4, 4, 4))
    compile_teacher_forced(model, steps=4, learning_rate=3e-3)
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3)).astype(np.uint8)
    (x, y), = caption_data.batches(images, [0, 1, 2, 3], caption_data.caption_ids(
        tokenizer, captions, 4), 4).take(1)
    assert_training_steps_move_weights(model, x, y)
    reloaded = assert_round_trip(model, x, tmp_path / "model.keras")

    captioner_ = captioner.Captioner(reloaded, tokenizer, max_length=5)
    signatures = signatures_of(captioner.serving_archive(captioner_, beam_width=2),
                               tmp_path / "1")
    png = tf.io.encode_png(images[0])
    served = signatures["serving_default"](images=tf.stack([png, png]))
    assert served["caption"].shape == (2,)
    lite = signatures_of(captioner.lite_archive(captioner_), tmp_path / "lite")
    assert {"encode", "decode_step"} <= set(lite)


# ---------------------------------------------------------------------------------------------
# Checkpoints from before models/ existed
# ---------------------------------------------------------------------------------------------

LEGACY_INPUTS = {
    "lenet5": ["lenet5_input"],
    "fraud_autoencoder": ["fraud_input"],
    "fraud_vae": ["fraud_input"],
    "fraud_rbm": ["fraud_input"],
    "translation": ["translation_source", "translation_target"],
    "captioning_attention": ["captioning_image", "captioning_caption"],
    "captioning_show-and-tell": ["captioning_image", "captioning_caption"],
}


@pytest.mark.parametrize("name", sorted(LEGACY_INPUTS))
def test_checkpoints_saved_before_the_move_load_and_compute_the_same(name):
    import layers.rbm  # noqa: F401  (each module registers its classes under their old names)
    import models.anomaly  # noqa: F401
    import models.captioner  # noqa: F401
    import models.lenet  # noqa: F401
    import models.seq2seq  # noqa: F401
    import models.sequence_training  # noqa: F401

    expected = json.loads((LEGACY / "expected.json").read_text())[name]
    inputs = [np.load(LEGACY / f"{array}.npy") for array in LEGACY_INPUTS[name]]
    # Compiled as saved: the loss, metric and optimizer classes resolve by their names too.
    model = keras.saving.load_model(LEGACY / f"{name}.keras")
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    np.testing.assert_allclose(outputs, np.array(expected), rtol=1e-5, atol=1e-5)
