"""GANs end to end: both models learn (Frechet distance against an untrained generator, cGAN label
accuracy against chance), a collapsed generator fails the coverage check, MirroredStrategy on two
logical CPUs plays the same first three steps as one device, export round trip, generate, bad
input, exact resume after a kill mid-epoch."""

import io
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from mirroring import assert_same_adam_weights
from PIL import Image

from apps import backup, digit_ocr, gan, runner
from models import dcgan
from pipelines import images as image_data
from serving.litert import LiteRTModel

PROJECT = Path(__file__).resolve().parents[1]
MNIST_TEST = PROJECT.parent / "shared/data/mnist/t10k-images-idx3-ubyte.gz"
EPOCHS = 20  # 19 steps an epoch on the embedded digits: 380 rounds of D and G
FILTERS = 32  # half the default width: the same architecture, twice as fast


@pytest.fixture(scope="module")
def cgan_run(trained_run, tmp_path_factory):
    """A cGAN trained briefly, judged by conftest's LeNet-5 (trained on the same digits)."""
    run_dir = tmp_path_factory.mktemp("gan") / "cgan"
    figures = gan.train(gan.TrainConfig(model="cgan", epochs=EPOCHS, filters=FILTERS,
                                        run_dir=run_dir, evaluator=trained_run, verbose=0))
    return run_dir, figures


@pytest.fixture(scope="module")
def dcgan_run(trained_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gan") / "dcgan"
    figures = gan.train(gan.TrainConfig(model="dcgan", epochs=EPOCHS, filters=FILTERS,
                                        run_dir=run_dir, evaluator=trained_run, verbose=0))
    return run_dir, figures


@pytest.fixture(scope="module")
def judge(trained_run):
    return dcgan.Judge(digit_ocr.load_run(trained_run)[0])


@pytest.fixture(scope="module")
def cgan_export(cgan_run, tmp_path_factory):
    return gan.export(cgan_run[0], model_base=tmp_path_factory.mktemp("saved_models"), quiet=True)


def noise(count, seed=0):
    return np.random.default_rng(seed).standard_normal((count, dcgan.LATENT_DIM)).astype("float32")


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["dcgan_run", "cgan_run"])
def test_frechet_distance_falls_far_below_the_untrained_generators(run, request):
    _, figures = request.getfixturevalue(run)
    trained = figures["frechet_lenet"]
    floor = figures["frechet_floor_real_vs_real"]
    untrained = figures["frechet_untrained_generator"]
    assert untrained > 10 * floor, figures  # the scale has room between floor and ceiling
    assert trained < 0.2 * untrained, figures
    assert trained < 5 * floor, figures
    assert figures["frechet_images_per_set"] == 180  # half of the 360 held-out test digits


def test_cgan_draws_the_digit_it_is_asked_for(cgan_run, judge):
    run_dir, figures = cgan_run
    assert figures["label_accuracy"] >= 0.7, figures["label_accuracy"]  # chance: 0.1
    assert min(figures["label_accuracy_per_class"].values()) >= 0.2, figures
    # The same measurement on an untrained copy stays near chance.
    untrained = dcgan.build_generator("cgan", filters=FILTERS)
    asked = np.arange(500) % 10
    read = judge.classify(dcgan.sample_frames(untrained, noise(500), asked))
    assert (read == asked).mean() <= 0.25
    # and the figure written to the run directory is the one returned
    assert json.loads((run_dir / "metrics.json").read_text())["label_accuracy"] == \
        pytest.approx(figures["label_accuracy"])


def test_collapsed_generator_fails_mode_coverage(cgan_run, dcgan_run, judge, digits):
    # A generator that collapsed onto one digit: the trained cGAN, always asked for a 3.
    generator, _ = gan.load_generator(cgan_run[0])
    z = keras.Input((dcgan.LATENT_DIM,))
    threes = keras.Model(z, generator([z, keras.ops.full_like(z[:, 0], 3, dtype="int32")]))
    rng = np.random.default_rng(1)
    drawn = dcgan.unconditional_frames(threes, 1000, 10, rng)
    collapsed = dcgan.mode_coverage(judge.classify(drawn))
    assert collapsed["covered"] <= 2 and not collapsed["passed"], collapsed
    assert np.argmax(collapsed["counts"]) == 3
    # What passes: the real test digits, and the trained DCGAN's unconditional samples.
    real = np.stack([frame.numpy() for frame, _ in digits.test])
    assert dcgan.mode_coverage(judge.classify(real))["passed"]
    assert dcgan_run[1]["mode_coverage"]["covered"] >= 9, dcgan_run[1]["mode_coverage"]


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    b = 2.0 * rng.standard_normal((20_000, 4)) + shift
    # |mu_a - mu_b|^2 + Tr(I + 4I - 2 * 2I) = 5.25 + 4
    assert dcgan.frechet_distance(a, b) == pytest.approx(9.25, rel=0.02)
    assert dcgan.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_run_directory_has_what_a_user_looks_at(cgan_run):
    run_dir, _ = cgan_run
    for name in ("history.csv", "training_curves.png", "samples.png", "generator.keras",
                 "run.json", "evaluation.json", "metrics.json"):
        assert (run_dir / name).is_file(), name
    sheets = sorted((run_dir / "samples").glob("epoch_*.png"))
    assert [p.name for p in sheets] == [f"epoch_{e:03d}.png" for e in range(1, EPOCHS + 1)]
    first, last = (np.asarray(Image.open(p)) for p in (sheets[0], sheets[-1]))
    assert first.shape == last.shape == (2 * (10 * 30 + 2),) * 2  # 10x10 cells of 28 + 2
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 5  # training changed them
    history = runner.read_history(run_dir)
    assert len(history["epoch"]) == EPOCHS
    assert {"d_loss", "g_loss", "d_real", "d_fake", "val_d_real"} <= set(history)
    assert list((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert not (run_dir / "backup").exists()


# --- distribution -----------------------------------------------------------------------------


class StepLogs(keras.callbacks.Callback):
    """The logs after each training step: the running means of d_loss, g_loss, d_real, d_fake."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({name: float(value) for name, value in logs.items()})


def test_mirrored_first_three_steps_match_one_device(digits):
    # Three global batches of 64: one device takes each whole, two replicas 32 each.
    batches = gan.gan_batches(digits.train, 64).take(3)

    def three_steps(strategy, model_name):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            model = dcgan.build_gan(model_name, filters=16)
            # As train() compiles it, with one explicit rate: the same update on both sides
            # (train() would scale the rate with the replicas).
            model.compile(steps_per_execution=1, learning_rate=dcgan.LEARNING_RATE)
        logs = StepLogs()
        model.fit(batches, verbose=0, callbacks=[logs])
        return logs.steps, [w.numpy() for w in model.weights]

    mirrored = runner.choose_strategy("mirrored")  # one per process: see runner
    assert mirrored.num_replicas_in_sync == 2
    # The cGAN: the DCGAN's path plus labels (tracing under MirroredStrategy is what costs here).
    single, single_weights = three_steps(tf.distribute.get_strategy(), "cgan")
    replicated, mirrored_weights = three_steps(mirrored, "cgan")
    assert len(single) == len(replicated) == 3
    # d_loss is computed before any update of the step, g_loss after D's update (so it checks
    # how the replicas' gradients were combined); steps 2 and 3 start from the updated weights
    # and Adam moments, and draw new noise. All need each replica's slice of the same noise
    # and batch statistics over the global batch.
    for step, (one, two) in enumerate(zip(single, replicated)):
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert two[name] == pytest.approx(one[name], rel=1e-4), (step, name)
    assert_same_adam_weights(single_weights, mirrored_weights, steps=3,
                             learning_rate=dcgan.LEARNING_RATE, atol=5e-5)


def test_learning_rate_is_per_replica(digits):
    with runner.choose_strategy("mirrored").scope():
        model = dcgan.build_gan("dcgan", filters=8)
        model.compile()
    for optimizer in (model.d_optimizer, model.g_optimizer):
        assert optimizer.get_config()["learning_rate"] == pytest.approx(2 * dcgan.LEARNING_RATE)


def test_noise_changes_with_step_and_stream(digits):
    model = dcgan.build_gan("dcgan", filters=8)
    model.compile()
    first = model.draw_noise(4, stream=0).numpy()
    assert not np.allclose(first, model.draw_noise(4, stream=1).numpy())
    np.testing.assert_array_equal(first, model.draw_noise(4, stream=0).numpy())  # stateless
    model.g_optimizer.iterations.assign(1)
    assert not np.allclose(first, model.draw_noise(4, stream=0).numpy())


# --- export -----------------------------------------------------------------------------------


def test_saved_model_gives_uint8_images_and_png_bytes(cgan_run, cgan_export):
    generator, _ = gan.load_generator(cgan_run[0])
    z, labels = noise(16, seed=3), np.arange(16, dtype=np.int32) % 10
    expected = dcgan.sample_frames(generator, z, labels)

    reloaded = tf.saved_model.load(cgan_export["saved_model"])
    images = reloaded.signatures["serving_default"](noise=tf.constant(z), label=tf.constant(labels))
    images = images["images"].numpy()
    assert images.dtype == np.uint8 and images.shape == (16, 28, 28, 1)
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1

    encoded = reloaded.signatures["generate_png"](noise=tf.constant(z), label=tf.constant(labels))
    encoded = encoded["png_bytes"].numpy()
    assert len(encoded) == 16 and all(png.startswith(b"\x89PNG") for png in encoded)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in encoded])
    np.testing.assert_array_equal(decoded, images[..., 0])


def test_tflite_generators_match_keras_in_litert(cgan_run, cgan_export):
    generator, _ = gan.load_generator(cgan_run[0])
    z, labels = noise(32, seed=4), np.arange(32, dtype=np.int32) % 10
    expected = dcgan.sample_frames(generator, z, labels).astype(int)
    extra = Path(cgan_export["saved_model"]) / "assets.extra"
    for variant, max_off, mean_off in (("float32", 1, 0.01), ("float16", 8, 0.5)):
        runner_ = LiteRTModel(extra / f"gan_cgan_{variant}.tflite").signature("serving_default")
        images = runner_(noise=z, label=labels)["images"]
        assert images.dtype == np.uint8 and images.shape == (32, 28, 28, 1)
        difference = np.abs(images.astype(int) - expected)
        assert difference.max() <= max_off and difference.mean() <= mean_off, variant
    sizes = {v: cgan_export[v]["bytes"] for v in gan.TFLITE_VARIANTS}
    assert sizes["float16"] <= 0.55 * sizes["float32"]
    assert (extra / "labels.txt").read_text().split() == [str(d) for d in range(10)]


# --- skew: every served path scores what evaluate scores ---------------------------------------


def test_every_served_path_scores_what_evaluate_scores(cgan_run, cgan_export):
    """evaluate's noise and labels through serving_default, generate_png and each LiteRT file,
    and the CLI's PNG files, judged by the same LeNet-5 as evaluate judges its own images."""
    run_dir, _ = cgan_run
    rows = gan.served_figures(Path(cgan_export["saved_model"]), run_dir)
    table = {(row["path"], row["figure"]): row["value"] for row in rows}
    assert {row["examples"] for row in rows} == {gan.EVALUATION_SAMPLES}
    evaluated = json.loads((run_dir / "evaluation.json").read_text())
    assert table["evaluate (Keras)", "label accuracy"] == evaluated["label_accuracy"]
    assert table["evaluate (Keras)", "mode coverage"] == evaluated["mode_coverage"]["covered"]
    cli = f"CLI generate --seed {gan.EVALUATION_SEED}"
    # (path, its reference, label accuracy within, grey levels off Keras at most)
    for path, reference, tolerance, grey_levels in (
        ("SavedModel serving_default", "evaluate (Keras)", 0.0, 1),
        ("SavedModel generate_png", "evaluate (Keras)", 0.0, 1),
        ("LiteRT float32", "evaluate (Keras)", 0.0, 1),
        ("LiteRT float16", "evaluate (Keras)", 0.01, 8),  # float16 weights
        (cli, "evaluate (Keras), generate's noise", 0.0, 0),
    ):
        served, expected = table[path, "label accuracy"], table[reference, "label accuracy"]
        assert abs(served - expected) <= tolerance, (path, served, expected)
        assert table[path, "mode coverage"] == table[reference, "mode coverage"], path
        assert table[path, "max grey levels off Keras"] <= grey_levels, path


@pytest.mark.parametrize("source", ["embedded", "mnist"])
def test_frames_are_made_alike_in_numpy_and_in_the_graph(source, cgan_run, digits):
    """`to_frames` runs in numpy for Keras' images (evaluate, generate) and in TensorFlow in the
    SavedModel and .tflite graphs. On real digits scaled to the generator's [-1, 1] both give
    the digits back; on the trained generator's outputs for evaluate's noise they agree."""
    if source == "mnist":
        if not MNIST_TEST.is_file():
            pytest.skip("../shared/data/mnist is not here")
        real = image_data.read_idx(MNIST_TEST, image_data.IDX_IMAGES_MAGIC)[..., None]
        outputs = []
    else:
        real = np.stack([frame.numpy() for frame, _ in digits.test])
        generator, _ = gan.load_generator(cgan_run[0])
        draws = dcgan.evaluation_draws(np.random.default_rng(gan.EVALUATION_SEED),
                                       dcgan.LATENT_DIM, 10, len(real) // 2, 1000, True)
        outputs = [dcgan.infer(generator, list(draws[name])) for name in ("asked", "unconditional")]
    scaled = dcgan.to_gan_input(real).numpy()
    np.testing.assert_array_equal(dcgan.to_frames(scaled), real)
    for images in [scaled, *outputs]:
        np.testing.assert_array_equal(dcgan.to_frames(images),
                                      dcgan.to_frames(tf.constant(images)).numpy())


# --- generate ---------------------------------------------------------------------------------


def test_generate_writes_one_png_per_image_or_a_sheet(cgan_run, judge, tmp_path):
    run_dir, _ = cgan_run
    out = tmp_path / "threes"
    gan.main(["generate", "--model", "cgan", "--digit", "3", "--count", "30", "--output",
              str(out), "--run-dir", str(run_dir), "--seed", "5"])
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"cgan_3_{i:04d}.png" for i in range(30)]
    frames = np.stack([np.asarray(Image.open(f)) for f in files])[..., None]
    assert frames.shape == (30, 28, 28, 1) and frames.dtype == np.uint8
    assert (judge.classify(frames) == 3).mean() >= 0.6
    assert not list(out.glob(".*"))  # no partial files left

    gan.main(["generate", "--model", "cgan", "--count", "20", "--grid", "--output", str(out),
              "--run-dir", str(run_dir)])
    sheet = np.asarray(Image.open(out / "cgan_grid.png"))
    assert sheet.shape == (2 * 30 + 2, 10 * 30 + 2)  # two rows of ten


# --- bad input: one line, exit status 2 -------------------------------------------------------


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(gan.main, argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def test_bad_requests_are_reported_in_one_line(cgan_run, dcgan_run, tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [
        (["generate", "--model", "dcgan", "--digit", "3", "--output", out, "--run-dir",
          str(dcgan_run[0])], "--digit needs --model cgan"),
        (["generate", "--model", "cgan", "--digit", "12", "--output", out, "--run-dir",
          str(cgan_run[0])], "--digit 12"),
        (["generate", "--model", "cgan", "--output", out, "--run-dir", str(tmp_path / "none")],
         "run `train` first"),
        (["evaluate", "--run-dir", str(tmp_path / "none")], "run `train` first"),
        (["evaluate", "--model", "cgan", "--run-dir", str(cgan_run[0]), "--evaluator",
          str(tmp_path)], "not a trained apps.digit_ocr run"),
        (["train", "--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r")],
         "not 'digits'"),
    ]
    for argv, problem in cases:
        code, err = run_main(argv, capsys)
        assert code == 2 and err.count("\n") == 0 and problem in err, (argv, err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(runner.UsageError, match="--model wgan: choose from dcgan, cgan"):
        gan.TrainConfig(model="wgan")


def test_evaluator_trained_on_other_data_is_refused(tmp_path, cgan_run, trained_run, capsys):
    other = tmp_path / "lenet"
    other.mkdir()
    (other / "best.keras").write_bytes((trained_run / "best.keras").read_bytes())
    run = json.loads((trained_run / "run.json").read_text()) | {"data": "tfds:mnist"}
    (other / "run.json").write_text(json.dumps(run))
    code, err = run_main(["evaluate", "--model", "cgan", "--run-dir", str(cgan_run[0]),
                          "--evaluator", str(other)], capsys)
    assert code == 2 and "trained on tfds:mnist, the GAN on digits" in err


# --- resume -----------------------------------------------------------------------------------


def test_training_killed_mid_epoch_resumes_exactly(trained_run, tmp_path, kill_after_backup,
                                                   capsys):
    def train(run_dir):
        return gan.train(gan.TrainConfig(model="dcgan", epochs=2, filters=8, run_dir=run_dir,
                                         evaluator=trained_run, verbose=0, backup_every=1))

    uninterrupted = train(tmp_path / "whole")
    run_dir = tmp_path / "run"
    kill_after_backup(lambda: train(run_dir), epoch=1)
    position = backup.latest_position(runner.backup_dir(run_dir))
    # 19 steps an epoch, 8 per call into the graph: the backup after epoch 2's first call
    assert position == backup.Position(epoch=1, batch=8, step=27), position
    resumed = train(run_dir)
    assert "epoch 2, 8 batches in, step 27" in capsys.readouterr().out
    # The same run as one never killed: steps, history, weights.
    assert resumed["steps"] == uninterrupted["steps"] == 2 * 19
    assert (run_dir / "history.csv").read_text() == (tmp_path / "whole/history.csv").read_text()
    weights = [gan.load_generator(d)[0].get_weights() for d in (tmp_path / "whole", run_dir)]
    for one, two in zip(*weights):
        np.testing.assert_array_equal(one, two)
    assert len(list((run_dir / "samples").glob("epoch_*.png"))) == 2
    assert not (run_dir / "backup").exists()  # finished: the backup is gone
    # The run trained last is what evaluate, generate and export read without --run-dir;
    # --model names its default directory instead.
    assert gan.find_run().path == run_dir.resolve()
    assert gan.find_run(model_name="cgan").path == runner.RUNS_ROOT / "gan" / "cgan"
    assert gan.load_generator()[1]["model"] == "dcgan"


@pytest.mark.slow
def test_train_command_mirrors_over_two_logical_cpus(trained_run, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "apps.gan", "train", "--model", "cgan", "--strategy", "mirrored",
         "--devices", "2", "--epochs", "2", "--batch-size", "32", "--filters", "16",
         "--run-dir", str(tmp_path), "--evaluator", str(trained_run), "--verbose", "0"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["replicas"] == 2 and run["global_batch_size"] == 64
    figures = json.loads((tmp_path / "metrics.json").read_text())
    assert figures["frechet_lenet"] < figures["frechet_untrained_generator"]


def test_evaluator_is_trained_into_the_run_directory_once(cgan_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "cgan"
    run_dir.mkdir()
    (run_dir / "generator.keras").write_bytes((cgan_run[0] / "generator.keras").read_bytes())
    run = json.loads((cgan_run[0] / "run.json").read_text()) | {"evaluator": None}
    (run_dir / "run.json").write_text(json.dumps(run))
    monkeypatch.setattr(gan, "EVALUATOR_EPOCHS", {"small": 2, "large": 1})  # a quick judge
    figures = gan.evaluate(run_dir, quiet=True)
    judge = run_dir / "evaluator"
    assert figures["evaluator"] == str(judge)
    assert json.loads((judge / "run.json").read_text())["data"] == "digits"
    assert figures["evaluator_test_accuracy"] > 0.5
    # a judge made on the side is no digit_ocr run of the user's: their last run stays theirs
    assert digit_ocr.find_run().path.resolve() != judge.resolve()
    trained_at = (judge / "best.keras").stat().st_mtime_ns
    gan.evaluate(run_dir, quiet=True)
    assert (judge / "best.keras").stat().st_mtime_ns == trained_at  # reused, not retrained
