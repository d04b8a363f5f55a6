"""Spoken digits: the WAV reader, the in-graph features against their numpy twin, learning, bad
files, MirroredStrategy, exact resume after a kill, and every served path (SavedModel from WAV
bytes, float32 and int8 .tflite in the LiteRT runner on WAV files).

Fast by design (the whole file in about 90 s on 2 cores): one tiny model, trained once on the
embedded FSDD subset, serves most tests. While it trains, a copy of the same run in another process
is killed at a random step (both cores busy, half the wall time); a test resumes it and compares."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import backup, runner, speech
from pipelines import audio, wav

PROJECT = Path(__file__).resolve().parents[1]
# Tiny: quality is not the point here (bench/speech.py has the real figures).
TINY = {"units": 16, "layers": 1, "epochs": 8, "batch_size": 16, "backup_every": 2}
TINY_OPTIONS = ["--units", "16", "--layers", "1", "--epochs", "8", "--batch-size", "16",
                "--backup-every", "2", "--verbose", "0"]
TINY_STEPS = 8 * 14  # 216 training recordings, batches of 16


@pytest.fixture(scope="module")
def subset():
    return audio.load_speech_dataset()


class KilledRun:
    """`train` with the TINY options in another process, SIGKILLed by a watcher thread once its
    backups pass a random step."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.kill_after = random.Random().randint(4, TINY_STEPS // 2)
        self.killed_at = None
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "apps.speech", "train", *TINY_OPTIONS, "--run-dir",
             str(run_dir)], cwd=PROJECT, env=environment, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def watch(self):
        deadline = time.monotonic() + 180
        while self.process.poll() is None and time.monotonic() < deadline:
            position = backup.latest_position(runner.backup_dir(self.run_dir))
            if position and position.step >= self.kill_after:
                self.process.send_signal(signal.SIGKILL)
                self.killed_at = position.step
                break
            time.sleep(0.01)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The reference run (its directory and metrics) and the killed copy of it."""
    folder = tmp_path_factory.mktemp("speech")
    killed = KilledRun(folder / "killed")
    metrics = speech.train(speech.TrainConfig(**TINY, run_dir=folder / "lstm", verbose=0))
    return folder / "lstm", metrics, killed


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    return speech.export(trained_run[0], tmp_path_factory.mktemp("models"), quiet=True)


def tone(rate: int, seconds: float = 0.5, channels: int = 1) -> np.ndarray:
    """A 440 Hz + 1 kHz chord at `rate`, [samples, channels] (channels out of phase a little)."""
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.4 * np.sin(2 * np.pi * 440 * t + c) + 0.3 * np.sin(2 * np.pi * 1000 * t)
                     for c in range(channels)], axis=1)


# --- the WAV reader and the features ---------------------------------------------------------


@pytest.mark.parametrize("rate,width,channels", [
    (8000, 2, 1), (8000, 1, 1), (16000, 2, 2), (44100, 2, 1), (44100, 1, 2), (22050, 3, 1)])
def test_the_reader_resamples_mixes_down_and_scales_every_format(rate, width, channels, tmp_path):
    path = wav.write_wav(tmp_path / "chord.wav", tone(rate, channels=channels), rate, width)
    samples = wav.read_wav(path)
    expected = tone(wav.SAMPLE_RATE, channels=channels).mean(axis=1)
    assert samples.dtype == np.float32 and len(samples) == len(expected)
    inner = slice(100, -100)  # the resampler's edges see zeros beyond the file
    quantum = 2.0 / 2 ** (8 * width)
    assert np.abs(samples[inner] - expected[inner]).max() < 2 * quantum + 3e-3


def test_the_served_graph_decodes_wav_bytes_as_the_reader_does(tmp_path):
    path = wav.write_wav(tmp_path / "long.wav", tone(44100, seconds=1.3, channels=2), 44100)
    clip, length = audio.decode_wav(tf.constant(path.read_bytes()))
    expected_clip, expected_length = wav.fit_length(wav.read_wav(path))
    assert int(length) == expected_length == wav.CLIP_SAMPLES  # the middle second is kept
    np.testing.assert_allclose(clip.numpy(), expected_clip, atol=1e-4)


def test_in_graph_features_equal_the_numpy_twin(subset):
    clips, lengths = subset.test.clips[:24], subset.test.lengths[:24]
    np.testing.assert_allclose(audio.log_mel(tf.constant(clips)).numpy(), wav.log_mel(clips),
                               atol=2e-3)
    np.testing.assert_array_equal(audio.valid_frames(tf.constant(lengths)).numpy(),
                                  wav.valid_frames(lengths))
    mel = tf.signal.linear_to_mel_weight_matrix(wav.NUM_MELS, wav.FFT_LENGTH // 2 + 1,
                                                wav.SAMPLE_RATE, wav.MEL_LOW_HZ, wav.MEL_HIGH_HZ)
    np.testing.assert_allclose(mel.numpy(), wav.mel_matrix(), atol=1e-5)


def unrolled_probabilities(model, run, inputs, folder, count=None):
    """The first `count` recordings (all by default) through the graph the .tflite files are
    converted from (`speech.tflite_archive`, written out and loaded back), one at a time."""
    speech.tflite_archive(model, run).write_out(str(folder), verbose=False)
    loaded = tf.saved_model.load(str(folder))  # kept: its variables live as long as it does
    classify = getattr(loaded, speech.TFLITE_SIGNATURE)
    return np.concatenate([classify(inputs["features"][i : i + 1],
                                    inputs["frames"][i : i + 1])["probabilities"]
                           for i in range(count or len(inputs["frames"]))])


def test_what_lies_below_the_dynamic_range_does_not_reach_the_model(subset):
    """The same recordings with their quietest cells digital silence (an edited file) or a
    noise floor 50 dB under the loudest cell (a hissing microphone): the recurrent model's
    normalisation makes them the same frames, and without the floor it would not."""
    from models.speech import DYNAMIC_RANGE_DB, UtteranceNormalization

    test = audio.arrays(subset.test.subset(range(16)))
    features, frames = test["features"], test["frames"]
    mask = (np.arange(wav.NUM_FRAMES)[None] < frames[:, None]).astype(np.float32)
    loudest = np.where(mask[..., None] > 0, features, -np.inf).max(axis=(1, 2), keepdims=True)
    nats_per_db = np.log(10.0) / 10.0
    quiet = (features < loudest - (DYNAMIC_RANGE_DB + 5) * nats_per_db) & (mask[..., None] > 0)
    assert quiet.sum() > 100  # the test recordings have cells to change
    silent = np.where(quiet, np.log(wav.LOG_OFFSET), features).astype(np.float32)
    hiss = np.random.default_rng(0).normal(loudest - 50 * nats_per_db, 0.3, features.shape)
    hissing = np.where(quiet, hiss, features).astype(np.float32)

    def normalized(values, dynamic_range_db):
        layer = UtteranceNormalization(dynamic_range_db)
        return layer(tf.constant(values), tf.constant(mask)).numpy()

    np.testing.assert_allclose(normalized(silent, DYNAMIC_RANGE_DB),
                               normalized(hissing, DYNAMIC_RANGE_DB), atol=1e-5)
    assert np.abs(normalized(silent, None) - normalized(hissing, None)).max() > 0.5


def test_a_run_trained_before_the_floor_exports_as_it_was_trained(subset, tmp_path):
    """The .tflite graph is rebuilt (unrolled) from the run's options; a model saved without the
    dynamic-range floor must not gain one there."""
    test = audio.arrays(subset.test.subset(range(8)))
    test["features"][:, :, :8] = np.log(wav.LOG_OFFSET)  # low bands silent: below any floor
    run = {"model": "lstm", "cell": "lstm", "units": TINY["units"], "layers": TINY["layers"],
           "frontend": "none"}
    for dynamic_range_db in (None, 40.0):
        keras.utils.set_random_seed(5)
        model = speech.build_model(speech.TrainConfig(**TINY, frontend="none"),
                                   dynamic_range_db=dynamic_range_db)
        exported = unrolled_probabilities(model, run, test, tmp_path / str(dynamic_range_db))
        np.testing.assert_allclose(exported, model.predict(test, verbose=0), atol=1e-5)


def test_augmented_batches_are_reproducible_and_keep_their_shapes(subset):
    def first(seed):
        inputs, labels = next(iter(audio.batches(subset.train.subset(range(16)), 8, shuffle=True,
                                                 augment_data=True, seed=seed)))
        return inputs["features"].numpy(), inputs["frames"].numpy(), labels.numpy()

    a, b, c = first(1), first(1), first(2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (8, wav.NUM_FRAMES, wav.NUM_MELS) and a[1].min() >= 1


def test_pauses_split_a_digit_string_into_its_digits(subset):
    pieces = [subset.test.clips[i][: subset.test.lengths[i]] for i in range(5)]
    gap = np.zeros(int(0.2 * wav.SAMPLE_RATE), np.float32)
    string = np.concatenate([x for piece in pieces for x in (piece, gap)])
    assert len(wav.split_at_pauses(string)) == 5


# --- learning, resuming, mirroring --------------------------------------------------------------


def test_trained_model_is_far_beyond_an_untrained_copy(trained_run, subset):
    run_dir, metrics, _ = trained_run
    model, _ = speech.load_run(run_dir)
    untrained = speech.build_model(speech.TrainConfig(**TINY))
    inputs, labels = audio.arrays(subset.test), subset.test.labels
    accuracy = (model.predict(inputs, verbose=0).argmax(1) == labels).mean()
    chance = (untrained.predict(inputs, verbose=0).argmax(1) == labels).mean()
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    assert accuracy > 0.5 and chance < 0.25, (accuracy, chance)
    assert (run_dir / "confusion_matrix.png").is_file() and (run_dir / "history.csv").is_file()


def test_the_dsn_learns_the_stacked_windows_and_loads_as_one_model(subset, tmp_path):
    """One small module, no augmentation: quality is bench/speech.py's business."""
    metrics = speech.train(speech.TrainConfig(model="dsn", dsn_modules=1, dsn_units=128, epochs=2,
                                              augment=False, run_dir=tmp_path, verbose=0,
                                              mark_last=False))
    model, run = speech.load_run(tmp_path)
    probabilities = model.predict(audio.arrays(subset.test), verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (probabilities.argmax(1) == subset.test.labels).mean() == metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.4 and run["model"] == "dsn"


def test_an_ensemble_is_the_mean_of_its_members_and_exports_as_one(subset, tmp_path):
    """`--members 2`: two members from two seeds, each a run of its own; best.keras reads the
    mean of their probabilities, and so does the unrolled graph the .tflite files come from."""
    run_dir = tmp_path / "ensemble"
    metrics = speech.train(speech.TrainConfig(**TINY | {"epochs": 3}, members=2,
                                              run_dir=run_dir, verbose=0))
    ensemble, run = speech.load_run(run_dir)
    members = [speech.load_run(run_dir / f"member_{k}")[0] for k in range(2)]
    test = audio.arrays(subset.test)
    each = [member.predict(test, verbose=0) for member in members]
    assert np.abs(each[0] - each[1]).max() > 0.1  # two seeds, two models
    mean = np.mean(each, axis=0)
    np.testing.assert_allclose(ensemble.predict(test, verbose=0), mean, atol=1e-5)
    assert metrics["test_accuracy"] == pytest.approx((mean.argmax(1) == subset.test.labels).mean())

    exported = unrolled_probabilities(ensemble, run, test, tmp_path / "lite", count=8)
    np.testing.assert_allclose(exported, mean[:8], atol=1e-5)
    with pytest.raises(runner.UsageError, match="--members"):
        speech.TrainConfig(model="dsn", members=2)


def test_a_killed_run_resumes_exactly(trained_run, capsys):
    """The copy of the fixture's run killed at a random step is trained again (here, in this
    process): it ends with the fixture's weights and history."""
    reference, metrics, killed = trained_run
    killed.watcher.join()
    assert killed.killed_at is not None, f"the copy ended before step {killed.kill_after}"
    position = backup.latest_position(runner.backup_dir(killed.run_dir))
    assert position.step < TINY_STEPS == metrics["steps"]

    again = speech.train(speech.TrainConfig(**TINY, run_dir=killed.run_dir, verbose=0))
    assert f"{position.batch} batches in, step {position.step}" in capsys.readouterr().out
    assert again["steps"] == TINY_STEPS
    resumed = killed.run_dir
    for expected, restored in zip(keras.saving.load_model(reference / "best.keras").get_weights(),
                                  keras.saving.load_model(resumed / "best.keras").get_weights()):
        np.testing.assert_allclose(restored, expected, atol=1e-5)
    np.testing.assert_allclose(runner.read_history(resumed)["loss"],
                               runner.read_history(reference)["loss"], rtol=1e-4)
    assert not runner.backup_dir(resumed).exists()


def test_mirrored_strategy_on_two_cpus_matches_one_device_for_three_steps(subset, monkeypatch):
    three_batches = audio.batches(subset.train, 32).take(3)  # the same global batches

    def train_three_steps(strategy):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = speech.compile_model(speech.build_model(speech.TrainConfig(**TINY)), 10)
        model.steps_per_execution = 1
        losses = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
        model.fit(three_batches, verbose=0, callbacks=[record])
        return losses, model.get_weights()

    mirrored = runner.choose_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2
    monkeypatch.setattr(runner, "scaled_learning_rate", lambda rate, strategy: rate)
    monkeypatch.setattr(speech, "DROPOUT", 0.0)  # each replica would drop other units
    single_losses, single_weights = train_three_steps(tf.distribute.get_strategy())
    mirrored_losses, mirrored_weights = train_three_steps(mirrored)
    assert len(single_losses) == 3
    np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-5)
    # The replicas' batch-norm statistics and gradients are summed in another order, and Adam
    # divides each gradient by its own scale: a weight can move by a rounding error's share of a
    # step (3e-3) more or less. A wrong reduction would be a whole step or more.
    for one, two in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(two, one, atol=5e-5)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["not a WAV", "empty", "silent"])
def test_a_bad_file_is_one_line_and_exit_status_2(kind, trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    if kind == "not a WAV":
        bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        wav.write_wav(bad, np.zeros(4000))
    with pytest.raises(SystemExit) as stop:
        runner.run_cli(speech.main, ["predict", str(bad), "--run-dir", str(trained_run[0])])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {bad}: {kind.split()[-1] if kind != 'not a WAV' else 'not a'}")


def test_a_bad_training_file_stops_before_training(tmp_path, capsys):
    for label in ("yes", "no"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            wav.write_wav(tmp_path / "data" / label / f"{i}.wav", tone(8000)[:, 0])
    (tmp_path / "data" / "no" / "3.wav").write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        runner.run_cli(speech.main, ["train", "--data", str(tmp_path / "data"), "--run-dir",
                                     str(tmp_path / "run"), "--epochs", "1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'data' / 'no' / '3.wav'}: empty file\n"
    assert not (tmp_path / "run").exists()


# --- served paths ------------------------------------------------------------------------------


def test_every_served_path_reads_the_test_recordings_as_evaluate_scores_them(trained_run,
                                                                             exported):
    rows = {row["path"]: row["value"] for row in speech.served_figures(
        Path(exported["saved_model"]), trained_run[0])}
    evaluated = rows["evaluate (Keras)"]
    assert evaluated == pytest.approx(trained_run[1]["test_accuracy"])
    for path in ("SavedModel serving_default", "CLI predict", "LiteRT float32"):
        assert rows[path] == pytest.approx(evaluated, abs=0.01), (path, rows)
    assert rows["LiteRT int8"] > 0.8 * evaluated, rows


def test_export_is_a_tf_serving_version_with_both_tflite_files(exported):
    version = Path(exported["saved_model"])
    assert version.name == "1" and (version / "saved_model.pb").is_file()
    extra = version / "assets.extra"
    assert json.loads((extra / "litert.json").read_text())["preprocess"] == "wav_log_mel"
    for variant in speech.TFLITE_VARIANTS:
        assert (extra / f"speech_{variant}.tflite").is_file()
    assert exported["float32"]["agreement_with_keras"] >= 0.99


def test_the_litert_runner_reads_a_digit_string_without_tensorflow(exported, subset, tmp_path):
    pieces = [subset.test.clips[i][: subset.test.lengths[i]] for i in range(4)]
    gap = np.zeros(int(0.3 * wav.SAMPLE_RATE), np.float32)
    number = wav.write_wav(tmp_path / "number.wav",
                           np.concatenate([x for piece in pieces for x in (piece, gap)]))
    model = Path(exported["saved_model"]) / "assets.extra" / "speech_int8.tflite"
    code = ("import sys; from serving import litert_speech; litert_speech.main(sys.argv[1:]); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]")
    completed = subprocess.run([sys.executable, "-c", code, str(model), str(number)], cwd=PROJECT,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    text = completed.stdout.split(": ")[1].split()[0]
    assert len(text) == 4 and text.isdigit()


# --- the convolutional front end (CRNN) ----------------------------------------------------------


def test_the_conv_frontend_trains_ignores_the_padding_and_exports(subset, tmp_path):
    """`--frontend conv`: one training step moves its weights; whatever the padding frames hold
    (and however the recurrence runs, unrolled or not) the probabilities stay the same; float32
    and int8 .tflite with builtin ops only read the test recordings as Keras does."""
    from serving import export as export_lib
    from serving import litert, litert_speech

    config = speech.TrainConfig(**TINY, frontend="conv")
    keras.utils.set_random_seed(3)
    model = speech.compile_model(speech.build_model(config), 10)
    inputs, labels = next(iter(audio.batches(subset.train, 16, shuffle=True, augment_data=True)))
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(inputs, labels)
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())
               if a.ndim == 4)  # both convolutions learned

    test = audio.arrays(subset.test.subset(range(24)))
    frames = test["frames"]
    assert frames.min() < wav.NUM_FRAMES  # some padding to change
    noisy = test["features"].copy()
    padding = np.arange(wav.NUM_FRAMES)[None] >= frames[:, None]
    noisy[padding] = np.random.default_rng(0).normal(0, 10, (padding.sum(), wav.NUM_MELS))
    clean = model.predict(test, verbose=0)
    np.testing.assert_allclose(model.predict({"features": noisy, "frames": frames}, verbose=0),
                               clean, atol=1e-5)

    run = {"model": "lstm", "cell": "lstm", "units": TINY["units"], "layers": TINY["layers"],
           "frontend": "conv"}
    speech.tflite_archive(model, run).write_out(str(tmp_path / "lite"), verbose=False)
    calibration = audio.arrays(subset.train.subset(range(0, len(subset.train), 9)))
    samples = [{name: values[i : i + 1] for name, values in calibration.items()}
               for i in range(len(calibration["frames"]))]
    for variant in ("float32", "int8"):
        with warnings.catch_warnings():  # the int8 calibration's (deprecated) TF interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            flatbuffer = export_lib.convert_to_tflite(tmp_path / "lite", speech.TFLITE_SIGNATURE,
                                                      variant, samples)
        lite = litert.digit_probabilities(litert_speech.open_signature(flatbuffer), test)
        # int8: within a few quantisation steps (1/256) of Keras
        np.testing.assert_allclose(lite, clean, atol=1e-4 if variant == "float32" else 0.03)
