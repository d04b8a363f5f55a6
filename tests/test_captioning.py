"""Captioning end to end on generated shape scenes: a small captioner really learns (held-out
BLEU-4 on object combinations never seen in training, against an untrained copy and the most
frequent caption), attention beats show-and-tell on 2-3 object scenes, beam search against greedy,
the SavedModel captions a real PNG file's bytes, the command line and bad input."""

import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from PIL import Image

from apps import captioning, runner
from models import photo_training
from models.sequence_training import compile_teacher_forced
from pipelines import DataError, text_pairs
from pipelines import captions as caption_data
from serving.litert_captioning import CaptionLiteRT

# Small enough to train in about 20 s on 2 cores, big enough to caption new combinations.
SMALL = {"scenes": 2500, "epochs": 5, "units": 128}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("captioning") / "attention"
    metrics = captioning.train(captioning.TrainConfig(**SMALL, run_dir=run_dir, verbose=0))
    return run_dir, metrics


@pytest.fixture(scope="module")
def captioner(trained):
    return captioning.load_captioner(trained[0])


@pytest.fixture(scope="module")
def data():
    return captioning.load_data(scenes=SMALL["scenes"])


def test_learns_new_combinations_far_above_untrained_copy_and_most_frequent_caption(
        trained, captioner, data):
    run_dir, metrics = trained
    assert metrics["test_images"] == len(data.test) >= 150
    assert metrics["bleu4"] >= 70, metrics
    assert metrics["bleu1"] >= metrics["bleu2"] >= metrics["bleu3"] >= metrics["bleu4"]
    assert metrics["most_frequent_bleu4"] <= 15
    assert metrics["bleu4"] >= metrics["most_frequent_bleu4"] + 50

    run = json.loads((run_dir / "run.json").read_text())
    untrained = captioning.Captioner(
        captioning.build_model(captioner.tokenizer.size, units=run["units"]),
        captioner.tokenizer, captioner.max_length)
    images = data.test.images[:100]
    untrained_bleu = captioning.bleu_scores(untrained.captions(images),
                                            data.test.references[:100])["bleu4"]
    assert untrained_bleu <= 10, untrained_bleu
    assert metrics["bleu4"] >= untrained_bleu + 55
    # Every held-out 2-3 object combination is absent from training.
    train_refs = {r[0] for r in data.train.references}
    assert not {r[0] for r in data.test.references} & train_refs


def test_attention_beats_show_and_tell_on_two_and_three_objects(trained, tmp_path):
    metrics = captioning.train(captioning.TrainConfig(**SMALL, decoder="show-and-tell",
                                                      run_dir=tmp_path / "sat", verbose=0))
    attention = trained[1]
    # Both stated in the report; the mean-pooled image vector loses where things are.
    print(f"BLEU-4 attention {attention['bleu4']:.1f}, show-and-tell {metrics['bleu4']:.1f}")
    assert metrics["bleu4"] >= 10  # show-and-tell learns something ...
    assert attention["bleu4"] >= metrics["bleu4"] + 10  # ... attention clearly more


def test_run_directory_has_what_a_user_looks_at(trained):
    run_dir, _ = trained
    for name in ("history.csv", "training_curves.png", "attention.png", "metrics.json",
                 "evaluation.json", "best.keras", "run.json", "vocab.txt"):
        assert (run_dir / name).is_file(), name
    with Image.open(run_dir / "attention.png") as image:
        assert image.size[0] > 300


def test_beam_search_never_scores_below_greedy_and_width_one_is_greedy(captioner, data):
    images = data.test.images[:40]
    greedy = captioner.compiled_search(1, 0.0)(tf.constant(images))
    beam = captioner.compiled_search(4, 0.0)(tf.constant(images))
    assert np.all(beam["log_probs"][:, 0].numpy() >= greedy["log_probs"][:, 0].numpy() - 1e-4)
    # Width 1 = argmax at every step, checked against a plain Python loop.
    memory, keys, mask, state = captioner.encode(tf.constant(images[:5]))
    tokens = tf.fill([5], 2)
    steps = []
    for _ in range(captioner.max_length):
        log_probs, state, _ = captioner.decode_step(tokens, state, memory, keys, mask)
        tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        steps.append(tokens.numpy())
    loop = np.stack(steps, axis=1)
    for row, found in enumerate(captioner.best_ids(images[:5], beam_width=1)):
        np.testing.assert_array_equal(found, loop[row, : len(found)])


def test_attention_looks_at_different_regions_for_different_words(captioner, data):
    image = data.test.images[0]
    ids = captioner.best_ids(image[None])[0]
    weights = captioner.attention(image, ids)  # [words, regions]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    assert len({int(np.argmax(w)) for w in weights}) >= 2


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    report = captioning.export(trained[0], tmp_path_factory.mktemp("models"), quiet=True,
                               check_images=10)
    return Path(report["saved_model"]), report


def test_saved_model_captions_bytes_of_a_real_png_file(exported, captioner, data, tmp_path):
    version, _ = exported
    assert version.name == "1" and (version / "saved_model.pb").is_file()
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".incomplete")]
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(data.test.images[3]))
    loaded = tf.saved_model.load(str(version))
    out = loaded.signatures["serving_default"](images=tf.constant([path.read_bytes()] * 2))
    served = [c.decode() for c in out["caption"].numpy()]
    expected = captioner.captions(data.test.images[3:4])[0]
    assert served == [expected, expected]
    assert len(expected.split()) >= 4


def test_litert_matches_keras_greedy_token_for_token_without_tensorflow(exported, captioner,
                                                                         data):
    version, report = exported
    assert report["float32"]["same_tokens_as_keras_greedy"] == 1.0
    assert report["dynamic"]["same_tokens_as_keras_greedy"] >= 0.8
    assert report["dynamic"]["bytes"] < 0.4 * report["float32"]["bytes"]
    lite = CaptionLiteRT(version / "assets.extra" / "captioning_float32.tflite")
    images = data.test.images[20:30]  # others than the export's own check
    for image, ids in zip(images, captioner.best_ids(images, beam_width=1, alpha=0.0)):
        lite_ids, attention = lite.greedy_ids(image)
        assert lite_ids == [int(t) for t in ids]
        assert np.allclose(np.sum(attention, axis=1), 1.0, atol=1e-4)
    assert lite.caption(images[0]) == captioner.captions(images[:1], beam_width=1)[0]
    content = (version / "assets.extra" / "captioning_float32.tflite").read_bytes()
    assert b"Flex" not in content  # builtin ops only


def test_every_served_path_reproduces_evaluates_bleu_on_the_held_out_scenes(trained, exported,
                                                                            data):
    """The skew check: the held-out scenes as PNG files through serving_default, `caption` and
    the LiteRT runner. The beam-search paths give evaluate's BLEU-4 exactly; the LiteRT runner
    decodes greedily and gives Keras' greedy figure: float32 exactly, float16 and the int8
    weights of "dynamic" within a point (a rare token flips)."""
    run_dir, metrics = trained
    rows = captioning.served_figures(exported[0], run_dir)
    print(*rows, sep="\n")  # shown when it fails
    value = {row["path"]: row["value"] for row in rows}
    assert rows[0]["path"] == "evaluate (Keras)" and rows[0]["value"] == metrics["bleu4"]
    assert {row["examples"] for row in rows} == {len(data.test)}
    assert value["SavedModel serving_default"] == value["CLI caption"] == metrics["bleu4"]
    assert value["LiteRT float32"] == value["Keras greedy"]
    for variant in ("float16", "dynamic"):
        assert value[f"LiteRT {variant}"] == pytest.approx(value["Keras greedy"], abs=1.0)
    assert value["Keras greedy"] >= 70


def test_caption_command_prints_one_caption_per_image(trained, captioner, data, tmp_path,
                                                     capsys):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"scene{i}.png")
        paths[-1].write_bytes(png_bytes(data.test.images[i]))
    captioning.main(["caption", *map(str, paths), "--run-dir", str(trained[0])])
    using, *lines = capsys.readouterr().out.strip().splitlines()
    assert using == f"Using the run in {trained[0]} (--run-dir)" and len(lines) == 2
    assert [line.split(": ", 1)[1] for line in lines] == captioner.captions(data.test.images[:2])
    assert lines[0].startswith(str(paths[0]))


def test_missing_and_unreadable_images_fail_in_one_line(trained, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for path, words in ((tmp_path / "nope.png", "missing"), (bad, "unreadable image")):
        with pytest.raises(SystemExit) as exit_info:
            runner.run_cli(captioning.main, ["caption", str(path), "--run-dir", str(trained[0])])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err
        assert path.name in err


def test_evaluate_before_training_is_a_usage_error(tmp_path):
    with pytest.raises(DataError, match="run `train` first"):
        captioning.evaluate(tmp_path / "empty")


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        captioning.parse_args(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "caption", "export"):
        assert command in out


def test_keras_applications_encoder_loads_a_local_weights_file(tmp_path):
    model = captioning.build_model(20, backbone="MobileNetV2", backbone_weights=None)
    encoder = model.get_layer("encoder")
    assert not encoder.cnn.trainable
    regions, mask, state = encoder(np.zeros([2, 48, 48, 3], np.uint8))
    assert regions.shape == (2, 4, captioning.UNITS) and len(state) == 2  # 48 / 32 -> 2 x 2 grid
    full = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(48, 48, 3))
    full_path = tmp_path / "full.weights.h5"
    full.save_weights(full_path)
    loaded = captioning.build_model(20, backbone="MobileNetV2", backbone_weights=str(full_path))
    np.testing.assert_array_equal(loaded.get_layer("encoder").cnn.weights[0].numpy(),
                                  full.weights[0].numpy())
    # Checked with the options, before a run directory is touched.
    with pytest.raises(DataError, match="no such weights file"):
        captioning.TrainConfig(backbone="MobileNetV2",
                               backbone_weights=str(tmp_path / "missing.h5"))
    with pytest.raises(DataError, match="--encoder NoSuchNet: not a keras.applications model"):
        captioning.TrainConfig(backbone="NoSuchNet")
    with pytest.raises(ValueError, match="not a keras.applications model"):
        captioning.build_model(20, backbone="NoSuchNet")


def test_trains_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """Two replicas (conftest splits the CPU): per-replica batches, gradients summed by the
    optimizer; the model learns in a few steps (the validation loss falls by a fifth, the token
    accuracy rises well above the ~18% that always writing "a" would get)."""
    strategy = runner.choose_strategy("mirrored")
    assert strategy.num_replicas_in_sync == 2
    run_dir = tmp_path / "mirrored"
    captioning.train(captioning.TrainConfig(scenes=1500, epochs=3, units=64, strategy="mirrored",
                                            run_dir=run_dir, verbose=0, evaluate_after=False))
    assert json.loads((run_dir / "run.json").read_text())["replicas"] == 2
    history = runner.read_history(run_dir)
    assert history["val_loss"][-1] <= 0.8 * history["val_loss"][0], history
    assert history["val_masked_accuracy"][-1] >= 0.25, history


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


@pytest.mark.parametrize("decoder", captioning.DECODERS)
def test_mirrored_strategy_on_two_cpus_matches_one_device_for_three_steps(data, decoder):
    """Two replicas, each with half of the same global batch of 32: the same loss at each of
    the first 3 steps and the same weights after them as one device. It needs the batch
    normalisation statistics, the loss's token count and the gradient clipping of the whole
    global batch, not of each replica's half (per-replica statistics: losses 1e-4 apart,
    weights a fifth of the distance they moved)."""
    index, captions = caption_data.caption_pairs(data.train, every_reference=False)
    index, captions = index[:96], captions[:96]
    tokenizer = caption_data.build_tokenizer(captions, captioning.MAX_TOKENS)
    ids = caption_data.caption_ids(tokenizer, captions, 12)
    images = caption_data.image_array(data.train.images, captioning.IMAGE_SIZE)
    three = caption_data.batches(images, index, ids, 32, multiple_of=2)

    def three_steps(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():  # as `train` builds it, with the same rate on both sides
            model = captioning.build_model(tokenizer.size, decoder, embedding_dim=16, units=32,
                                           filters=(8, 16, 16))
            compile_teacher_forced(model, steps=3, learning_rate=1e-2)
        initial = np.concatenate([w.numpy().ravel() for w in model.weights])
        steps = StepLosses()
        model.fit(three, verbose=0, callbacks=[steps])
        return steps.losses, initial, np.concatenate([w.numpy().ravel() for w in model.weights])

    mirrored = runner.choose_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    single_losses, initial, single_weights = three_steps(tf.distribute.get_strategy())
    mirrored_losses, _, mirrored_weights = three_steps(mirrored)
    assert len(single_losses) == 3 and single_losses[2] < single_losses[0]  # it trains
    assert mirrored_losses == pytest.approx(single_losses, rel=1e-5)
    # Adam's first steps move every weight by about the rate, whatever its gradient's size: the
    # convolutions' gradients that are float noise (batch normalisation cancels their scale)
    # differ element by element, so the weights are compared as a share of how far they moved.
    moved = np.linalg.norm(single_weights - initial)
    assert np.linalg.norm(mirrored_weights - single_weights) <= 0.02 * moved


def flickr_fixture(folder: Path, count: int = 30) -> list[str]:
    """A tiny Flickr8k folder: token file, Flicker8k_Dataset/ with real JPEGs, no split files."""
    names = [f"{2000 + i}_x.jpg" for i in range(count)]
    (folder / "Flicker8k_Dataset").mkdir(parents=True)
    for i, name in enumerate(names):
        Image.new("RGB", (64, 40), (200 if i % 2 else 20, 60, 120)).save(
            folder / "Flicker8k_Dataset" / name)
    colour = ["blue", "red"]
    (folder / "Flickr8k.token.txt").write_text("".join(
        f"{n}#{k}\tA {colour[i % 2]} picture , take {k} .\n"
        for i, n in enumerate(names) for k in range(3)))
    return names


def test_trains_and_captions_from_a_flickr8k_folder(tmp_path):
    flickr_fixture(tmp_path / "flickr")
    run_dir = tmp_path / "run"
    metrics = captioning.train(captioning.TrainConfig(
        data=str(tmp_path / "flickr"), epochs=1, batch_size=16, units=32, run_dir=run_dir,
        verbose=0))
    run = json.loads((run_dir / "run.json").read_text())
    # The run trained last is what evaluate, caption and export read without --run-dir.
    assert captioning.find_run().path == run_dir.resolve()
    assert run["train_captions"] == 3 * run["train_images"]  # every reference is a target
    assert metrics["test_images"] == 3 and 0 <= metrics["bleu1"] <= 100
    assert "picture" in (run_dir / "vocab.txt").read_text().split()


def test_caption_file_with_missing_images_exits_2_naming_one(tmp_path, capsys):
    names = flickr_fixture(tmp_path / "flickr", count=12)
    (tmp_path / "flickr" / "Flicker8k_Dataset" / names[5]).unlink()
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(captioning.main, ["train", "--data", str(tmp_path / "flickr"),
                                         "--run-dir", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "1 of 12 images are missing" in err and names[5] in err


# ---------------------------------------------------------------------------------------------
# Photos: --encoder mobilenet_v2 (ImageNet-pretrained backbone, cached grids, photo decoder),
# on tiny Flickr8k folders and a MobileNetV2 weights file written here (alpha 0.35, 64x64
# photos: a 2x2 grid), so nothing is downloaded and nothing is slow.
# ---------------------------------------------------------------------------------------------

PHOTO_SIZE = 64
PHOTO_OPTIONS = {"image_size": PHOTO_SIZE, "units": 32, "embedding_dim": 16, "batch_size": 8,
                 "min_count": 1, "verbose": 0}


def photo_folder(folder: Path, count: int = 24) -> list[str]:
    """A Flickr8k folder of `count` noisy JPEG photos, five captions each, the split files."""
    rng = np.random.default_rng(1)
    names = [f"{4000 + i}_p.jpg" for i in range(count)]
    (folder / "Flicker8k_Dataset").mkdir(parents=True)
    for i, name in enumerate(names):
        pixels = rng.integers(0, 60, (60, 80, 3), dtype=np.uint8)
        pixels[..., i % 3] += 180  # red, green or blue photos
        Image.fromarray(pixels).save(folder / "Flicker8k_Dataset" / name, quality=90)
    colours = ["red", "green", "blue"]
    (folder / "Flickr8k.token.txt").write_text("".join(
        f"{n}#{k}\tA {colours[i % 3]} photo , take {k} .\n"
        for i, n in enumerate(names) for k in range(5)))
    parts = (names[: count - 8], names[count - 8 : count - 4], names[count - 4 :])
    for split, part in zip(caption_data.FLICKR_SPLIT_FILES.values(), parts):
        (folder / split).write_text("\n".join(part) + "\n")
    return names


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_0.35_no_top.weights.h5"
    keras.applications.MobileNetV2(alpha=0.35, include_top=False, weights=None,
                                   input_shape=(PHOTO_SIZE, PHOTO_SIZE, 3)).save_weights(path)
    return path


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, mobilenet_file):
    folder = tmp_path_factory.mktemp("photos") / "Flickr8k"
    photo_folder(folder)
    run_dir = folder.parent / "run"
    metrics = captioning.train(captioning.TrainConfig(
        data=str(folder), backbone="mobilenet_v2", backbone_weights=str(mobilenet_file),
        epochs=2, run_dir=run_dir, **PHOTO_OPTIONS))
    return folder, run_dir, metrics


def test_photo_defaults_fill_only_the_options_not_given(mobilenet_file, tmp_path):
    photos = dict(data=str(tmp_path), backbone="mobilenet_v2",
                  backbone_weights=str(mobilenet_file))
    chosen = captioning.TrainConfig(**photos)
    assert (chosen.epochs, chosen.batch_size, chosen.units) == (10, 32, 512)
    # The scenes' default value, given on the command line, is kept, not taken for "not given".
    eight = captioning.TrainConfig(**photos, epochs=captioning.SCENE["epochs"])
    assert eight.epochs == captioning.SCENE["epochs"] and eight.units == 512
    scenes = captioning.TrainConfig()
    assert (scenes.epochs, scenes.units) == (captioning.EPOCHS, captioning.UNITS)


def test_mobilenet_weights_load_by_layer_path_and_alpha_is_read_from_the_file(mobilenet_file):
    from models import photo_captioner

    assert photo_captioner.check_backbone_weights(mobilenet_file) == 0.35
    photo_model, _ = photo_captioner.build_photo_models(
        20, alpha=0.35, captions_per_photo=5, caption_length=6, image_size=PHOTO_SIZE,
        units=16, embedding_dim=8, weights=str(mobilenet_file))
    backbone = photo_model.get_layer("encoder").backbone
    assert not backbone.trainable
    import h5py

    with h5py.File(mobilenet_file) as handle:  # every variable under its layer's path
        first = np.asarray(handle["layers/conv2d/vars/0"])
        last = np.asarray(handle["layers/batch_normalization_51/vars/3"])
    np.testing.assert_array_equal(backbone.get_layer("Conv1").kernel.numpy(), first)
    np.testing.assert_array_equal(backbone.get_layer("out_relu").input.shape[-1:], (1280,))
    assert np.array_equal(backbone.get_layer("Conv_1_bn").moving_variance.numpy(), last)


@pytest.mark.parametrize("case", ["missing", "other alpha", "other architecture", "not hdf5"])
def test_a_wrong_weights_file_is_one_line_exit_2_and_nothing_written(case, mobilenet_file,
                                                                     tmp_path, capsys):
    folder = tmp_path / "Flickr8k"
    photo_folder(folder, count=12)
    weights, alpha, words = mobilenet_file, [], ""
    if case == "missing":
        weights, words = tmp_path / "nope.weights.h5", "no such weights file"
    elif case == "other alpha":
        alpha, words = ["--encoder-alpha", "1.0"], "alpha 0.35 weights, not alpha 1.0"
    elif case == "other architecture":
        weights, words = tmp_path / "dense.weights.h5", "not MobileNetV2 no-top weights"
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(weights)
    else:
        weights, words = tmp_path / "text.weights.h5", "not a Keras weights file"
        weights.write_text("hello")
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(captioning.main, [
            "train", "--data", str(folder), "--encoder", "mobilenet_v2", "--encoder-weights",
            str(weights), *alpha, "--image-size", str(PHOTO_SIZE), "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert weights.name in err
    assert not run_dir.exists()


@pytest.mark.parametrize("kept", [0.1, 0.5])
def test_a_photo_that_does_not_decode_exits_2_naming_it_and_nothing_is_written(
        kept, mobilenet_file, tmp_path, capsys):
    """A JPEG cut short: at a tenth Pillow's check finds it; at half its header and first rows
    read, and only decoding it (while the grids are cached) fails."""
    folder = tmp_path / "Flickr8k"
    names = photo_folder(folder, count=12)
    broken = folder / "Flicker8k_Dataset" / names[2]
    content = broken.read_bytes()
    broken.write_bytes(content[: int(kept * len(content))])
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(captioning.main, [
            "train", "--data", str(folder), "--encoder", "mobilenet_v2", "--encoder-weights",
            str(mobilenet_file), "--image-size", str(PHOTO_SIZE), "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and names[2] in err, err
    assert not run_dir.exists()


def test_the_grid_cache_is_written_once_and_read_at_every_epoch(photo_run, mobilenet_file,
                                                                 monkeypatch):
    from pipelines import region_grids

    folder, run_dir, _ = photo_run
    run = json.loads((run_dir / "run.json").read_text())
    assert run["photos_encoded"] == 16 + 4  # training and validation photos, once
    cached = {p.name: p.stat().st_mtime_ns for p in (run_dir / "region_grids").glob("*.npy")}
    assert set(cached) == {"train.npy", "validation.npy"}
    grids = np.load(run_dir / "region_grids" / "train.npy")
    assert grids.dtype == np.float16 and grids.shape == (16, 4, 1280)  # 2x2 grid at 64 pixels

    # Trained again in the same directory: no photo goes through the encoder, and each epoch's
    # batches read the memory-mapped file.
    read_from = []
    original = region_grids.grid_batches

    def recording(grids, *args, **kwargs):
        read_from.append(type(grids))
        return original(grids, *args, **kwargs)

    monkeypatch.setattr(region_grids, "grid_batches", recording)
    monkeypatch.setattr(region_grids.RegionCache, "_fill", lambda *a: pytest.fail("recomputed"))
    captioning.train(captioning.TrainConfig(
        data=str(folder), backbone="mobilenet_v2", backbone_weights=str(mobilenet_file),
        epochs=2, run_dir=run_dir, evaluate_after=False, **PHOTO_OPTIONS))
    assert json.loads((run_dir / "run.json").read_text())["photos_encoded"] == 0
    assert read_from and set(read_from) == {np.memmap}
    assert len(read_from) >= 2 + 1  # two epochs of training batches (and validation)
    assert {p.name: p.stat().st_mtime_ns
            for p in (run_dir / "region_grids").glob("*.npy")} == cached


def test_photo_run_picks_epoch_by_bleu_and_beam_on_validation_and_has_the_baselines(photo_run):
    _, run_dir, metrics = photo_run
    history = runner.read_history(run_dir)
    assert len(history["val_bleu4"]) == 2 and metrics["best_val_bleu4"] == max(
        history["val_bleu4"])
    decoding = json.loads((run_dir / "decoding.json").read_text())
    assert {(t["beam_width"], t["alpha"]) for t in decoding["validation"]} == {
        (width, alpha) for width in photo_training.BEAM_WIDTHS
        for alpha in (photo_training.LENGTH_PENALTIES if width > 1 else (0.0,))}
    best = max(decoding["validation"], key=lambda t: t["val_bleu4"])
    assert (decoding["beam_width"], decoding["alpha"]) == (best["beam_width"], best["alpha"])
    assert metrics["test_images"] == 4 and metrics["beam_width"] == decoding["beam_width"]
    for name in ("bleu4", "most_frequent_bleu4", "untrained_bleu4"):
        assert 0 <= metrics[name] <= 100
    assert "." not in metrics["most_frequent_caption"]  # scored without punctuation
    with Image.open(run_dir / "attention.png") as sheet:
        assert sheet.size[0] > 400


def test_a_photo_run_killed_in_its_epochs_resumes_exactly(photo_run, mobilenet_file, tmp_path,
                                                           kill_after_backup, capsys):
    """A lone photo run trains through `cross_entropy_phase` as a member does: killed right after
    a backup inside its second epoch and run again, it ends as the run never killed did."""
    folder, _, _ = photo_run

    def train(run_dir):
        return captioning.train(captioning.TrainConfig(
            data=str(folder), backbone="mobilenet_v2", backbone_weights=str(mobilenet_file),
            epochs=2, run_dir=run_dir, evaluate_after=False, backup_every=1, **PHOTO_OPTIONS))

    uninterrupted = train(tmp_path / "whole")
    run_dir = tmp_path / "run"
    kill_after_backup(lambda: train(run_dir), epoch=1, batch=1)
    resumed = train(run_dir)
    assert "epoch 2, 1 batches in" in capsys.readouterr().out
    assert resumed["steps"] == uninterrupted["steps"] == 2 * 2  # 16 photos, 8 a batch
    assert resumed["best_val_bleu4"] == uninterrupted["best_val_bleu4"]
    assert (run_dir / "history.csv").read_text() == (tmp_path / "whole/history.csv").read_text()
    for one, two in zip(*(keras.saving.load_model(d / "best.keras", compile=False).get_weights()
                          for d in (tmp_path / "whole", run_dir))):
        np.testing.assert_array_equal(one, two)
    assert not (run_dir / "backup").exists()


def test_self_critical_command_continues_a_photo_run_and_keeps_the_best_epoch(
        photo_run, tmp_path, capsys):
    folder, run_dir, _ = photo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = (copy / "best.keras").read_bytes()
    captioning.main(["self-critical", "--run-dir", str(copy), "--epochs", "2",
                     "--learning-rate", "1e-3"])
    history = runner.read_history(copy / "self_critical")
    assert len(history["reward"]) == 2 and all(r >= 0 for r in history["reward"])
    metrics = json.loads((copy / "metrics.json").read_text())
    # The starting model (cross-entropy's best), scored as the self-critical epochs are
    start = json.loads((copy / "self_critical" / "start.json").read_text())["val_bleu4"]
    assert start == metrics["self_critical_start_val_bleu4"]
    assert metrics["self_critical_epochs"] == 2
    assert metrics["best_val_bleu4"] == max([start] + history["val_bleu4"])
    # best.keras moved on only if a self-critical epoch beat the model it started from
    replaced = (copy / "best.keras").read_bytes() != before
    assert replaced == (max(history["val_bleu4"]) > start)
    assert not (copy / "self_critical" / "backup").exists()  # finished: no backup left
    assert "test BLEU-1..4" in capsys.readouterr().out


def test_an_ensemble_word_is_the_mean_of_its_members_probabilities(tmp_path):
    from models import photo_captioner as photo

    sizes = dict(alpha=0.35, captions_per_photo=5, caption_length=6, image_size=PHOTO_SIZE,
                 units=16, embedding_dim=8)
    members = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        members.append(photo.build_photo_models(20, **sizes)[0])
    ensemble = photo.join_members(photo.build_photo_models(20, **sizes, members=2)[0], members)
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.saving.load_model(tmp_path / "ensemble.keras")
    rng = np.random.default_rng(0)
    regions = tf.constant(rng.uniform(0, 6, (3, 4, 1280)), tf.float32)  # a 2x2 grid
    tokens = tf.constant([text_pairs.START] * 3, tf.int32)
    caption_in = tf.constant(rng.integers(4, 20, (3, 5)), tf.int32)

    def first_step(model):
        memory, keys, mask, state = photo.photo_search(model).encode(regions)
        return model.get_layer("decoder").step(tokens, state, memory, keys, mask)[0]

    def whole_caption(model):
        memory, mask, state = model.get_layer("encoder").head(regions)
        return ops.log_softmax(model.get_layer("decoder")(caption_in, memory, mask, state),
                               axis=-1)

    for words in (first_step, whole_caption):
        alone = np.stack([np.exp(words(m)) for m in members])
        expected = np.log(alone.mean(axis=0))
        np.testing.assert_allclose(words(ensemble), expected, atol=1e-5)
        np.testing.assert_allclose(words(loaded), expected, atol=1e-5)
    assert not np.allclose(*alone)  # two members that differ

    # A trivial ensemble, a model with itself, decodes as the model alone
    twice = photo.join_members(photo.build_photo_models(20, **sizes, members=2)[0],
                               [members[0]] * 2)
    alone, joined = (photo.photo_search(m).decode(regions, 6, 3, 0.0)
                     for m in (members[0], twice))
    np.testing.assert_array_equal(joined["tokens"], alone["tokens"])
    np.testing.assert_allclose(joined["scores"], alone["scores"], atol=1e-4)


def test_fine_tuning_trains_the_top_convolutions_over_the_cut_cache(mobilenet_file):
    from models import photo_captioner as photo

    photo_model, _ = photo.build_photo_models(
        20, alpha=0.35, captions_per_photo=2, caption_length=5, image_size=PHOTO_SIZE,
        units=16, embedding_dim=8, weights=str(mobilenet_file))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, (4, PHOTO_SIZE, PHOTO_SIZE, 3), np.uint8)
    cut = np.asarray(photo.cut_grid_fn(photo_model)(images))  # [4, R, 160]

    def assert_the_top_over_the_cut_is_the_backbone():
        whole = photo.photo_grids(photo_model, images)
        # the untrained fixture backbone's features are tiny: tolerances on their scale
        np.testing.assert_allclose(photo.top_grids(photo_model, cut), whole, rtol=1e-4,
                                   atol=1e-4 * np.abs(whole).max())

    assert_the_top_over_the_cut_is_the_backbone()
    trainer = photo.build_fine_tune_model(photo_model, 2, 5)
    backbone = photo_model.get_layer("encoder").backbone
    trained = {w.path for w in trainer.trainable_weights} & {w.path for w in backbone.weights}
    assert trained == {"block_16_expand/kernel", "block_16_depthwise/kernel",
                       "block_16_project/kernel", "Conv_1/kernel"}
    frozen = {w.path: w.numpy().copy() for w in backbone.weights}
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    captions = rng.integers(4, 20, (4, 2, 5))
    regions = rng.normal(0, 1, cut.shape).astype(np.float16)  # cut grids of a real photo's scale
    trainer.fit(tf.data.Dataset.from_tensors(((regions, captions), captions.reshape(8, 5))),
                epochs=2, verbose=0)  # targets: rows b*K + k
    moved = {w.path for w in backbone.weights if not np.array_equal(w.numpy(), frozen[w.path])}
    assert moved == trained  # the convolutions, not a batch norm's statistics or anything below
    assert_the_top_over_the_cut_is_the_backbone()  # the photo model reads through the new top


@pytest.fixture(scope="module")
def ensemble_run(photo_run, mobilenet_file, tmp_path_factory):
    folder, _, _ = photo_run
    config = dict(data=str(folder), backbone="mobilenet_v2", epochs=2,
                  run_dir=tmp_path_factory.mktemp("ensemble") / "run",
                  backbone_weights=str(mobilenet_file), members=2, fine_tune_encoder=True,
                  fine_tune_epochs=2, self_critical_epochs=1, **PHOTO_OPTIONS)
    return config, captioning.train(captioning.TrainConfig(**config))


def test_members_train_apart_on_the_grids_and_caption_together(ensemble_run):
    config, metrics = ensemble_run
    run_dir = config["run_dir"]
    for k in range(2):
        member = run_dir / f"member_{k}"
        history = runner.read_history(member)
        assert len(history["val_bleu4"]) == 2 and not (member / "backup").exists()
        assert metrics["member_val_bleu4"][k] == max(history["val_bleu4"])
    model = captioning.load_captioner(run_dir).model
    decoder = model.get_layer("decoder")
    assert len(decoder.decoders) == 2
    first, second = (d.output_dense.kernel.numpy() for d in decoder.decoders)
    assert not np.allclose(first, second)  # each member its own seed
    assert (run_dir / "decoding.json").is_file() and metrics["test_images"] == 4
    assert 0 <= metrics["bleu4"] <= 100
    # --fine-tune-encoder: the first member fine-tuned MobileNetV2's top (its phase kept the
    # best epoch only if it beat the start); the ensemble reads photos through that top
    fine_tune = runner.read_history(run_dir / "member_0" / "fine_tune")
    start = json.loads((run_dir / "member_0" / "fine_tune" / "start.json").read_text())
    assert len(fine_tune["val_bleu4"]) == 2
    assert metrics["member_val_bleu4"][0] == max([start["val_bleu4"], *fine_tune["val_bleu4"]])
    assert not (run_dir / "member_1" / "fine_tune").exists()
    first = keras.saving.load_model(run_dir / "member_0" / "best.keras")
    for joined, alone in zip(model.get_layer("encoder").backbone.weights,
                             first.get_layer("encoder").backbone.weights):
        np.testing.assert_array_equal(joined.numpy(), alone.numpy())
    # --self-critical-epochs: the last member's epoch, judged by the ensemble with it (from the
    # ensemble of the members' cross-entropy models, scored the same way)
    critical = run_dir / "member_1" / "self_critical"
    history = runner.read_history(critical)
    start = json.loads((critical / "start.json").read_text())["val_bleu4"]
    assert len(history["reward"]) == 1
    assert metrics["self_critical_start_val_bleu4"] == start
    assert metrics["best_val_bleu4"] == max(start, *history["val_bleu4"])
    last = keras.saving.load_model(run_dir / "member_1" / "best.keras")
    np.testing.assert_array_equal(decoder.decoders[1].output_dense.kernel.numpy(),
                                  last.get_layer("decoder").output_dense.kernel.numpy())
    assert not (critical / "backup").exists()

    # A finished member is not trained again when the run is resumed after a kill
    member_0 = (run_dir / "member_0" / "best.keras").stat().st_mtime_ns
    for name in ("done.json", "cross_entropy.json", "self_critical.json"):  # killed in its
        (run_dir / "member_1" / name).unlink()  # cross-entropy epochs
    (run_dir / "metrics.json").unlink()  # the kill came before the run finished
    again = captioning.train(captioning.TrainConfig(**config))
    assert (run_dir / "member_0" / "best.keras").stat().st_mtime_ns == member_0
    assert len(runner.read_history(run_dir / "member_1")["val_bleu4"]) == 2
    assert again["member_val_bleu4"][0] == metrics["member_val_bleu4"][0]


def test_the_self_critical_command_leaves_an_ensemble_alone(ensemble_run, capsys):
    config, _ = ensemble_run
    before = (config["run_dir"] / "best.keras").read_bytes()
    with pytest.raises(SystemExit) as stop:
        runner.run_cli(captioning.main, ["self-critical", "--run-dir", str(config["run_dir"])])
    assert stop.value.code == 2
    assert "--self-critical-epochs" in capsys.readouterr().err
    assert (config["run_dir"] / "best.keras").read_bytes() == before


@pytest.mark.slow  # about a minute: the SavedModel and the .tflite files of two members
def test_an_ensemble_exports_like_one_lstm(ensemble_run, tmp_path):
    config, _ = ensemble_run
    report = captioning.export(config["run_dir"], tmp_path / "models", quiet=True,
                               check_images=2)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (90, 120, 3), np.uint8)).save(
        photo)
    served = tf.saved_model.load(report["saved_model"]).signatures["serving_default"](
        images=tf.constant([photo.read_bytes()]))
    assert [c.decode() for c in served["caption"].numpy()] == captioning.caption(
        [photo], config["run_dir"])
    # The decoder file carries both members' stacked states: the same greedy tokens as Keras
    assert report["float32"]["same_tokens_as_keras_greedy"] == 1.0


def test_fine_tuning_is_for_photos_without_self_critical_epochs(mobilenet_file, tmp_path):
    photos = dict(data=str(tmp_path), backbone="mobilenet_v2",
                  backbone_weights=str(mobilenet_file))
    with pytest.raises(runner.UsageError, match="--fine-tune-encoder"):
        captioning.TrainConfig(fine_tune_encoder=True)
    with pytest.raises(runner.UsageError, match="--fine-tune-encoder"):
        captioning.TrainConfig(**photos, fine_tune_encoder=True, self_critical_epochs=1)
    # an ensemble's last member trains them on the fine-tuned grids
    captioning.TrainConfig(**photos, fine_tune_encoder=True, self_critical_epochs=1, members=2)


def test_members_are_for_photo_lstms(mobilenet_file, tmp_path):
    with pytest.raises(runner.UsageError, match="--members 2"):
        captioning.TrainConfig(members=2)  # the generated scenes
    with pytest.raises(runner.UsageError, match="--members 2"):
        captioning.TrainConfig(data=str(tmp_path), backbone="mobilenet_v2", members=2,
                               backbone_weights=str(mobilenet_file), decoder="transformer")


def test_self_critical_on_a_scene_run_is_a_usage_error(trained, capsys):
    with pytest.raises(SystemExit) as stop:
        runner.run_cli(captioning.main, ["self-critical", "--run-dir", str(trained[0])])
    assert stop.value.code == 2
    assert "photo runs" in capsys.readouterr().err


@pytest.mark.slow  # about 40 s: the SavedModel and three .tflite conversions (one int8)
def test_photo_export_captions_a_500x375_jpeg_in_the_graph_and_on_litert(photo_run, tmp_path):
    from serving.litert_captioning import CaptionLiteRT

    _, run_dir, _ = photo_run
    report = captioning.export(run_dir, tmp_path / "models", quiet=True, check_images=2)
    version = Path(report["saved_model"])
    big = tmp_path / "holiday.jpg"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(big)
    served = tf.saved_model.load(str(version)).signatures["serving_default"](
        images=tf.constant([big.read_bytes()]))
    expected = captioning.caption([big], run_dir)[0]  # the CLI: same pixels, same search
    assert [c.decode() for c in served["caption"].numpy()] == [expected]
    assert np.isfinite(served["score"].numpy()).all()
    extra = version / "assets.extra"
    assert report["float32"]["same_tokens_as_keras_greedy"] == 1.0
    lite = CaptionLiteRT(extra / "captioning_decoder_float32.tflite")
    assert lite.encode_image is not None  # the int8 encoder
    encoder_bytes = (extra / "captioning_encoder_int8.tflite").read_bytes()
    assert b"Flex" not in encoder_bytes and report["encoder_int8_bytes"] == len(encoder_bytes)
    assert isinstance(lite.caption(lite.read_image(big)), str)

    # The runner's numpy beam search is the graph's: from the same (float) grids, the float32
    # decoder file gives Keras' beam-search tokens.
    from models.photo_captioner import GridCaptioner, photo_grids

    captioner = captioning.load_captioner(run_dir)
    test = captioning.held_out_data(runner.RunDir(run_dir)).test
    images = caption_data.image_array(test.images, PHOTO_SIZE)
    grids = photo_grids(captioner.model, images)
    search = GridCaptioner(captioner.model, captioner.tokenizer, captioner.max_length)
    for width, alpha in ((3, 0.0), (4, 1.0)):
        found = search.best_ids(grids, width, alpha)
        assert max(len(ids) for ids in found) >= 3  # words, not only [end]
        for image_grid, ids in zip(grids, found):
            lite.encode_image = lambda pixels, g=image_grid: {"regions": g[None]}
            assert lite.beam_ids(images[0], width, alpha) == [int(t) for t in ids]


# ---------------------------------------------------------------------------------------------
# Photos with --decoder transformer: layers.transformer's decoder cross-attending to the grid,
# at toy sizes (the module's constants patched for the fixture) on the same photo folder.
# ---------------------------------------------------------------------------------------------

TINY_TRANSFORMER = {"TRANSFORMER_LAYERS": 2, "TRANSFORMER_HEADS": 2, "D_MODEL": 32,
                    "TRANSFORMER_FF": 64}
COLOURS, PLACES = ("red", "green", "blue"), ("top left", "top right", "bottom left",
                                             "bottom right")


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory, mobilenet_file):
    """`train --decoder transformer` on the photo folder at toy sizes, one epoch, two decodings
    tried on validation instead of seven: the app's path, not learning (the random MobileNetV2
    of the fixture gives every photo the same grid, all zeros)."""
    from models import photo_captioner

    folder = tmp_path_factory.mktemp("photos") / "Flickr8k"
    photo_folder(folder)
    run_dir = folder.parent / "run"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TINY_TRANSFORMER.items():
            patch.setattr(photo_captioner, name, value)
        patch.setattr(photo_training, "BEAM_WIDTHS", (1, 3))
        patch.setattr(photo_training, "LENGTH_PENALTIES", (0.0,))
        metrics = captioning.train(captioning.TrainConfig(
            data=str(folder), backbone="mobilenet_v2", backbone_weights=str(mobilenet_file),
            decoder="transformer", epochs=1, run_dir=run_dir, evaluate_after=False,
            **PHOTO_OPTIONS))
    return folder, run_dir, metrics


def made_up_grids(rng, patterns: np.ndarray, count: int) -> tuple[np.ndarray, list[str]]:
    """2x2 grids of noise where one region holds a colour's pattern; the caption names the
    colour and the region, so the decoder must attend to the right one and know where it is."""
    colour, place = rng.integers(0, 3, count), rng.integers(0, 4, count)
    grids = rng.normal(0, 0.3, (count, 4, patterns.shape[1]))
    grids[np.arange(count), place] += patterns[colour]
    return grids.astype(np.float32), [f"a {COLOURS[c]} photo {PLACES[p]}"
                                      for c, p in zip(colour, place)]


@pytest.fixture(scope="module")
def grid_transformer():
    """A toy Transformer photo decoder trained on `made_up_grids` (150 steps), an untrained
    copy, and held-out grids with their captions."""
    from models.photo_captioner import GridCaptioner, build_photo_models

    rng = np.random.default_rng(3)
    patterns = rng.normal(0, 1, (3, 1280))
    grids, texts = made_up_grids(rng, patterns, 800)
    tokenizer = caption_data.build_tokenizer(texts, captioning.MAX_TOKENS)
    ids = caption_data.caption_ids(tokenizer, texts, 5)  # [start] 5 words [end]
    sizes = {"alpha": 0.35, "captions_per_photo": 1, "caption_length": 6,
             "image_size": PHOTO_SIZE, "decoder": "transformer", "layers": 2, "heads": 2,
             "memory_dim": 32, "ff": 64}
    keras.utils.set_random_seed(0)
    (photo_model, grid_model), (untrained, _) = (build_photo_models(tokenizer.size, **sizes)
                                                 for _ in range(2))
    compile_teacher_forced(grid_model, 150, 3e-3, label_smoothing=0.1)
    grid_model.fit((grids.astype(np.float16), ids[:, None, :-1]), ids[:, 1:], batch_size=32,
                   epochs=6, verbose=0)
    held_out, held_out_texts = made_up_grids(rng, patterns, 30)
    return ({name: GridCaptioner(model, tokenizer, 6)
             for name, model in (("trained", photo_model), ("untrained", untrained))},
            held_out, held_out_texts)


def test_transformer_photo_decoder_names_colour_and_region_an_untrained_copy_does_not(
        grid_transformer):
    captioners, grids, texts = grid_transformer
    exact = {name: np.mean([c == t for c, t in zip(captioner.captions(grids, 1, 0.0), texts)])
             for name, captioner in captioners.items()}
    # Chance is a third for the colour times a quarter for the place.
    assert exact["trained"] >= 0.7 and exact["untrained"] == 0.0, exact


def test_transformer_cached_beam_search_gives_the_prefix_recomputing_search_tokens(
        grid_transformer):
    from layers.beam_search import EncoderDecoderSearch
    from layers.transformer import RecomputingDecoder
    from pipelines import text_pairs

    captioners, grids, _ = grid_transformer
    for cached in captioners.values():  # trained: confident; untrained: close calls
        recomputing = EncoderDecoderSearch(
            cached.encoder, RecomputingDecoder(cached.decoder), cached.decoder.vocab_size,
            forbidden_ids=(text_pairs.PAD, text_pairs.UNK, text_pairs.START),
            start_id=text_pairs.START, end_id=text_pairs.END)
        for width, alpha in ((1, 0.0), (3, 0.5)):
            found = recomputing.decode(tf.constant(grids), cached.max_length, width, alpha)
            expected = [list(t[:n]) for t, n in zip(found["tokens"][:, 0].numpy(),
                                                    found["lengths"][:, 0].numpy())]
            assert [list(ids) for ids in cached.best_ids(grids, width, alpha)] == expected


def test_transformer_photo_run_keeps_its_sizes_and_picks_epoch_and_beam_on_validation(
        transformer_run):
    _, run_dir, metrics = transformer_run
    settings = runner.RunDir(run_dir).config()["photo_settings"]
    assert settings["decoder"] == "transformer" and settings["memory_dim"] == 32
    assert type(captioning.load_captioner(run_dir).decoder).__name__ == (
        "PhotoTransformerDecoder")
    assert metrics["best_val_bleu4"] == max(runner.read_history(run_dir)["val_bleu4"])
    decoding = json.loads((run_dir / "decoding.json").read_text())
    assert len(decoding["validation"]) == 2 and metrics["beam_width"] == decoding["beam_width"]


def test_transformer_is_for_photos_only(capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(captioning.main, ["train", "--decoder", "transformer"])
    assert exit_info.value.code == 2
    assert "captions photos only" in capsys.readouterr().err


@pytest.mark.slow  # about two minutes: the SavedModel, the int8 encoder, two decoder files
def test_transformer_export_captions_jpeg_bytes_as_keras_and_runs_on_litert(transformer_run,
                                                                            tmp_path):
    from models.photo_captioner import GridCaptioner, photo_grids

    _, run_dir, _ = transformer_run
    captioner = captioning.load_captioner(run_dir)
    test = captioning.held_out_data(runner.RunDir(run_dir)).test
    images = caption_data.image_array(test.images, PHOTO_SIZE)
    report = captioning.export(run_dir, tmp_path / "models", quiet=True, check_images=2)
    # serving_default: the JPEG files' bytes in, the caption Keras writes for their pixels.
    beam, alpha = captioning.decoding_of(runner.RunDir(run_dir), None, None)
    served = tf.saved_model.load(report["saved_model"]).signatures["serving_default"](
        images=tf.constant([Path(p).read_bytes() for p in test.images]))
    assert [c.decode() for c in served["caption"].numpy()] == captioner.captions(
        images, beam, alpha)
    assert np.isfinite(served["score"].numpy()).all()
    # LiteRT: the decoder file carries the key/value cache and the position as its state.
    assert report["float32"]["same_tokens_as_keras_greedy"] == 1.0
    extra = Path(report["saved_model"]) / "assets.extra"
    lite = CaptionLiteRT(extra / "captioning_decoder_float32.tflite")
    grids = photo_grids(captioner.model, images)
    search = GridCaptioner(captioner.model, captioner.tokenizer, captioner.max_length)
    for width, alpha in ((1, 0.0), (3, 0.5)):  # from the same float grids: Keras' tokens
        for image_grid, ids in zip(grids, search.best_ids(grids, width, alpha)):
            lite.encode_image = lambda pixels, g=image_grid: {"regions": g[None]}
            assert lite.beam_ids(images[0], width, alpha) == [int(t) for t in ids]
