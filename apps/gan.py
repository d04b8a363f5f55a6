"""Image generation with GANs: a DCGAN and a conditional GAN that measure themselves.

    python -m apps.gan train                           # DCGAN on the embedded digits
    python -m apps.gan train --model cgan --data ../shared/data/mnist --epochs 5
    python -m apps.gan evaluate --model cgan           # Frechet distance, label accuracy, coverage
    python -m apps.gan generate --model cgan --digit 3 --count 100 --output threes/
    python -m apps.gan export --model cgan             # -> saved_models/gan_cgan/<version>/

The networks and the adversarial game are in `models/dcgan.py`: DCGAN (Radford, Metz & Chintala,
2016) with the non-saturating loss of Goodfellow et al. (2014), and the conditional GAN (Mirza &
Osindero, 2014) whose discriminator projects the label (Miyato & Koyama, 2018).

Pictures alone cannot tell a working GAN from a collapsed one, so `evaluate` measures:
1. the Frechet distance (the FID of Heusel et al., 2017, with LeNet-5's 84 F6 features in place of
   Inception's) between generated and real test images, beside the same distance between two
   halves of the real test set (the floor a perfect generator reaches) and for an untrained
   generator (the ceiling);
2. for the cGAN, the share of generated images that LeNet-5 reads as the digit asked for;
3. mode coverage: how many of the 10 classes LeNet-5 finds among 1,000 unconditional samples.
The LeNet-5 is `apps.digit_ocr`'s, trained on the same data.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from apps import digit_ocr, runner
from apps.runner import UsageError
from models import dcgan
from pipelines import DataError
from pipelines import images as image_data
from serving import export as export_lib
from serving.litert import LiteRTModel

APP = "gan"
MODELS = dcgan.MODELS
DEFAULT_MODEL = "dcgan"
DEFAULT_DATA = "digits"
# `train --quick`, and `make demo` (with --model cgan): half the epochs (figures: README.md).
QUICK = {"epochs": 30}
EPOCHS = 60  # on the embedded digits: 19 steps an epoch (timing: bench/README.md)
BATCH_SIZE = 64  # per replica
STEPS_PER_EXECUTION = 8  # several steps per call into the graph when on one device

GRID_ROWS = dcgan.GRID_ROWS  # the fixed-noise sample sheet: 10 x 10 images
EVALUATION_SAMPLES = 1_000
EVALUATOR_EPOCHS = {"small": 30, "large": 8}  # LeNet-5: <= 10,000 training images, or more
EVALUATION_SEED = 2024
MODEL_BASE = Path("saved_models")


@dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. `evaluator`: an `apps.digit_ocr` run trained on the same data whose
    LeNet-5 judges the generator; None: one trained into the run directory when missing."""

    data: str = DEFAULT_DATA
    model: str = DEFAULT_MODEL
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    seed: int = dcgan.SEED
    filters: int = dcgan.FILTERS  # width of both networks
    evaluator: Path | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise UsageError(f"--model {self.model}: choose from {', '.join(MODELS)}")


def default_run_dir(model_name: str) -> Path:
    return runner.RUNS_ROOT / APP / model_name


def find_run(run_dir: Path | None = None, model_name: str | None = None) -> runner.RunDir:
    """--run-dir, else the --model's directory, else the run trained last."""
    return runner.find_run(APP, run_dir, model_name and default_run_dir(model_name),
                           fallback=default_run_dir(DEFAULT_MODEL))


def load_generator(run_dir: Path | None = None) -> tuple[keras.Model, dict]:
    """A run's generator (the last epoch's) and its run.json."""
    run = find_run(run_dir)
    return keras.saving.load_model(run.file("generator.keras")), run.config()


# ---------------------------------------------------------------------------------------------
# Data and sample sheets
# ---------------------------------------------------------------------------------------------


def gan_batches(split: tf.data.Dataset, global_batch: int,
                seed: int = dcgan.SEED) -> tf.data.Dataset:
    """An unbatched split -> shuffled batches of (float32 [B, 28, 28, 1] in [-1, 1], int32 [B]).

    Full batches only: every replica then gets the same share, and the noise each one slices out
    of the global draw (`models.dcgan.GAN.draw_noise`) is exactly what one device would use. One
    pipeline per epoch, shuffled by `seed`: training passes `SEED + epoch`, so every process (a
    re-run resuming mid-epoch, every worker) sees the same batches in the same order.
    """
    return (
        split.cache()
        .shuffle(10_000, seed=seed, reshuffle_each_iteration=False)
        .batch(global_batch, drop_remainder=True)
        .map(lambda frames, labels: (dcgan.to_gan_input(frames), labels),
             num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None) -> dict:
    """Trains G and D on the data's training split, then evaluates G against the test split."""
    config = config or TrainConfig()
    run = runner.TrainingRun(APP, config, default_run_dir(config.model))
    dataset = image_data.load_image_dataset(config.data)
    train_size = image_data.count(dataset.train)
    steps_per_epoch = train_size // run.global_batch  # full batches only
    if steps_per_epoch == 0:
        raise UsageError(f"--batch-size {config.batch_size}: the global batch of"
                         f" {run.global_batch} is larger than the {train_size} training images")
    if config.evaluator is not None:
        check_evaluator(Path(config.evaluator), config.data)  # before minutes of training

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return gan_batches(dataset.train, run.global_batch, config.seed + epoch)

    run.start(class_names=dataset.class_names, latent_dim=dcgan.LATENT_DIM)
    if run.resumed is None:  # a fresh run: drop the samples and generator of an earlier one
        for leftover in sorted((run.path / "samples").glob("*.png")):
            leftover.unlink()
        for name in ("generator.keras", "samples.png", "evaluation.json"):
            (run.path / name).unlink(missing_ok=True)
    with run.strategy.scope():
        gan = dcgan.build_gan(config.model, dataset.num_classes, config.filters, config.seed)
        # Keras 3.15's multi-step loop fails under MirroredStrategy: one step per call there.
        # (Backups then fall every STEPS_PER_EXECUTION steps at most: see apps.backup.)
        gan.compile(STEPS_PER_EXECUTION if run.replicas == 1 else 1)
    # No best checkpoint: the generator of the last epoch is the model (EpochSamples saves it).
    steps = run.fit(gan, epoch_batches, steps_per_epoch=steps_per_epoch,
                    validation_data=gan_batches(dataset.validation, run.global_batch,
                                                config.seed),
                    monitor=None, callbacks=[dcgan.EpochSamples(run.path, config.model == "cgan")])
    noise, labels = dcgan.fixed_grid_inputs(config.model == "cgan")
    dcgan.write_png(dcgan.sheet(dcgan.sample_frames(gan.generator, noise, labels), GRID_ROWS),
              run.path / "samples.png")

    figures = evaluate(run.path, evaluator=config.evaluator, quiet=True) | {"steps": steps}
    run.finish(figures)
    print(f"{APP} {config.model} on {dataset.name}: {summary(figures)}; run directory"
          f" {run.path}")
    return figures


# ---------------------------------------------------------------------------------------------
# evaluate: Frechet distance in LeNet-5's feature space, label accuracy, mode coverage
# ---------------------------------------------------------------------------------------------


def check_evaluator(evaluator_dir: Path, data: str) -> None:
    """A digit OCR run given as the evaluator must exist and have been trained on `data`."""
    run_file = evaluator_dir / "run.json"
    if not (evaluator_dir / "best.keras").is_file() or not run_file.is_file():
        raise UsageError(f"--evaluator {evaluator_dir}: not a trained apps.digit_ocr run")
    trained_on = json.loads(run_file.read_text())["data"]
    if trained_on != data:
        raise UsageError(
            f"--evaluator {evaluator_dir}: its LeNet was trained on {trained_on}, the GAN on {data}"
        )


def evaluator_lenet(run_dir: Path, data: str, evaluator: Path | None,
                    train_size: int) -> tuple[keras.Model, Path]:
    """The LeNet-5 that judges the generator: the given digit OCR run, else `run_dir/evaluator`,
    trained there (classic LeNet-5 by `apps.digit_ocr`) on the GAN's data when missing."""
    if evaluator is not None:
        check_evaluator(Path(evaluator), data)
        return digit_ocr.load_run(Path(evaluator))[0], Path(evaluator)
    own = run_dir / "evaluator"
    try:
        check_evaluator(own, data)
    except UsageError:
        epochs = EVALUATOR_EPOCHS["small" if train_size <= 10_000 else "large"]
        print(f"Training the evaluator LeNet-5 on {data} ({epochs} epochs) in {own}")
        # mark_last=False: the judge is no digit_ocr run of the user's (LAST stays theirs)
        digit_ocr.train(digit_ocr.TrainConfig(data=data, epochs=epochs, run_dir=own,
                                              verbose=0, mark_last=False))
    return digit_ocr.load_run(own)[0], own


def judged_run(run_dir: Path | None = None, evaluator: Path | None = None):
    """What `evaluate` reads: the run's directory, generator, run.json, data, judge and where
    the judge's LeNet-5 lives (the given one, else run.json's, else the run's own)."""
    run_dir = find_run(run_dir).path
    generator, run = load_generator(run_dir)
    if evaluator is None and run.get("evaluator"):
        evaluator = Path(run["evaluator"])
    dataset = image_data.load_image_dataset(run["data"])
    lenet, evaluator_dir = evaluator_lenet(run_dir, run["data"], evaluator,
                                           image_data.count(dataset.train))
    return run_dir, generator, run, dataset, dcgan.Judge(lenet), evaluator_dir


def evaluate(run_dir: Path | None = None, evaluator: Path | None = None,
             samples: int = EVALUATION_SAMPLES, quiet: bool = False) -> dict:
    """The generator of a run against the test split of its data; evaluation.json and a table."""
    if samples < 100:
        raise UsageError(f"--samples {samples}: at least 100, ten or more per class")
    run_dir, generator, run, dataset, judge, evaluator_dir = judged_run(run_dir, evaluator)
    num_classes = dataset.num_classes

    # The real test split, as uint8 frames, in two halves: A is the reference, B the real
    # images a perfect generator would be indistinguishable from.
    frames, labels = [], []
    for batch, label_batch in dataset.test.batch(1024):
        frames.append(batch.numpy())
        labels.append(label_batch.numpy())
    frames, labels = np.concatenate(frames), np.concatenate(labels)
    reference = judge.embed(frames[0::2])
    real_b, labels_b = frames[1::2], labels[1::2]
    draws = dcgan.evaluation_draws(np.random.default_rng(EVALUATION_SEED), run["latent_dim"],
                                   num_classes, len(real_b), samples, run["model"] == "cgan")

    def frechet(model: keras.Model, noise) -> float:  # as many samples as half B, B's labels
        generated = dcgan.sample_frames(model, noise, labels_b)
        return dcgan.frechet_distance(judge.embed(generated), reference)

    keras.utils.set_random_seed(EVALUATION_SEED)  # the same untrained weights every time
    untrained = dcgan.build_generator(run["model"], num_classes, run["filters"])
    figures = {
        "model": run["model"],
        "data": run["data"],
        "evaluator": str(evaluator_dir),
        "evaluator_test_accuracy": float((judge.classify(frames) == labels).mean()),
        "frechet_lenet": frechet(generator, draws["frechet"]),
        "frechet_floor_real_vs_real": dcgan.frechet_distance(judge.embed(real_b), reference),
        "frechet_untrained_generator": frechet(untrained, draws["frechet_untrained"]),
        "frechet_images_per_set": int(len(real_b)),
    }
    if run["model"] == "cgan":
        noise, asked = draws["asked"]
        read = judge.classify(dcgan.sample_frames(generator, noise, asked))
        figures["label_accuracy"] = float((read == asked).mean())
        figures["label_accuracy_per_class"] = {
            name: float((read[asked == c] == c).mean())
            for c, name in enumerate(dataset.class_names)
        }
    predicted = judge.classify(dcgan.sample_frames(generator, *draws["unconditional"]))
    figures["mode_coverage"] = dcgan.mode_coverage(predicted, num_classes)
    runner.write_json(run_dir / "evaluation.json", figures)
    if not quiet:
        print_figures(figures, dataset.class_names)
        print(f"\nJSON in {run_dir / 'evaluation.json'}")
    return figures


def summary(figures: dict) -> str:
    text = (f"Frechet distance (LeNet) {figures['frechet_lenet']:.2f} (real-vs-real floor"
            f" {figures['frechet_floor_real_vs_real']:.2f}, untrained generator"
            f" {figures['frechet_untrained_generator']:.1f})")
    if "label_accuracy" in figures:
        text += f", label accuracy {figures['label_accuracy']:.1%}"
    coverage = figures["mode_coverage"]
    return text + f", mode coverage {coverage['covered']}/{coverage['classes']}"


def print_figures(figures: dict, class_names: list[str]) -> None:
    coverage = figures["mode_coverage"]
    per_set = figures["frechet_images_per_set"]
    rows = [
        {"figure": "Frechet distance, LeNet F6 features", "value":
         f"{figures['frechet_lenet']:.2f}", "note": f"generated vs real test, {per_set} each"},
        {"figure": "  floor: real vs real", "value":
         f"{figures['frechet_floor_real_vs_real']:.2f}", "note": "two halves of the test split"},
        {"figure": "  ceiling: untrained generator", "value":
         f"{figures['frechet_untrained_generator']:.2f}", "note": "same architecture, not trained"},
    ]
    if "label_accuracy" in figures:
        rows.append({"figure": "label accuracy (cGAN)", "value":
                     f"{figures['label_accuracy']:.1%}", "note": "generated images LeNet-5 reads"
                     " as the digit asked for (chance 10%)"})
    rows += [
        {"figure": "mode coverage", "value": f"{coverage['covered']}/{coverage['classes']}",
         "note": f"classes with >= {dcgan.COVERAGE_MIN_SHARE:.1%} of {coverage['samples']}"
                 " samples: "
                 + ("passed" if coverage["passed"] else "FAILED (collapsed modes)")},
        {"figure": "evaluator LeNet-5 on real test", "value":
         f"{figures['evaluator_test_accuracy']:.1%}", "note": figures["evaluator"]},
    ]
    runner.print_table(rows)
    counts = coverage["counts"]
    print("\nsamples per class: " + "  ".join(f"{n}:{c}" for n, c in zip(class_names, counts)))


# ---------------------------------------------------------------------------------------------
# generate: PNG files from a trained generator
# ---------------------------------------------------------------------------------------------


def generate(output: Path, count: int = 100, digit: int | None = None, grid: bool = False,
             run_dir: Path | None = None, seed: int | None = None) -> list[Path]:
    """Draws `count` images (cGAN: of `digit`, or of every digit in turn) into `output`: one PNG
    per image, or one sheet with `grid`. Returns the files written."""
    if count < 1:
        raise UsageError(f"--count {count}: must be at least 1")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"--output {output}: exists and is not a folder")
    generator, run = load_generator(run_dir)
    if digit is not None and run["model"] != "cgan":
        raise UsageError(f"--digit needs --model cgan; {run['model']} draws no chosen digit")
    class_names = run["class_names"]
    if digit is not None and not 0 <= digit < len(class_names):
        raise UsageError(f"--digit {digit}: the model knows classes 0 to {len(class_names) - 1}")

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, generator.inputs[0].shape[-1])).astype(np.float32)
    labels = None
    if run["model"] == "cgan":
        labels = np.full(count, digit) if digit is not None else np.arange(count) % len(class_names)
    frames = dcgan.sample_frames(generator, noise, labels)

    output.mkdir(parents=True, exist_ok=True)
    stem = run["model"] + (f"_{class_names[digit]}" if digit is not None else "")
    if grid:
        path = output / f"{stem}_grid.png"
        dcgan.write_png(dcgan.sheet(frames, GRID_ROWS, scale=1), path)
        return [path]
    paths = []
    for i, frame in enumerate(tqdm(frames, desc="PNG", disable=count < 500)):
        name = stem if labels is None or digit is not None else f"{stem}_{class_names[labels[i]]}"
        paths.append(output / f"{name}_{i:04d}.png")
        dcgan.write_png(frame[..., 0], paths[-1])
    return paths


# ---------------------------------------------------------------------------------------------
# export: SavedModel for TF Serving, .tflite for phones
# ---------------------------------------------------------------------------------------------

TFLITE_VARIANTS = ("float32", "float16")  # int8 would need a calibrated noise range; not here
CHECK_SAMPLES = 64  # generated with the same z by Keras and by each .tflite file
serving_archive = dcgan.serving_archive  # tests/test_models.py builds it by this name


def tflite_frames(path: Path, noise: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    litert = LiteRTModel(path).signature("serving_default")
    inputs = {"noise": noise} if labels is None else {"noise": noise, "label": labels}
    return litert(**inputs)["images"]


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False) -> dict:
    """Publishes a run's generator as the next version under `model_base/gan_<model>/`, each
    .tflite variant checked in LiteRT against Keras on the same noise."""
    run_dir = find_run(run_dir).path
    generator, run = load_generator(run_dir)
    conditional = run["model"] == "cgan"
    rng = np.random.default_rng(EVALUATION_SEED)
    noise = rng.standard_normal((CHECK_SAMPLES, run["latent_dim"])).astype(np.float32)
    labels = (np.arange(CHECK_SAMPLES) % len(run["class_names"])).astype(np.int32) \
        if conditional else None
    expected = dcgan.sample_frames(generator, noise, labels).astype(np.int16)

    def check(path: Path) -> dict:  # grey levels off Keras
        difference = np.abs(tflite_frames(path, noise, labels).astype(np.int16) - expected)
        return {"max_abs_difference": int(difference.max()),
                "mean_abs_difference": float(difference.mean())}

    report = export_lib.write_version(
        Path(model_base) / f"{APP}_{run['model']}", serving_archive(generator, conditional),
        assets={
            "labels.txt": "\n".join(run["class_names"]) + "\n",
            "playground.json": {"labels": list(run["class_names"])},  # the web page's classes
            "generator.json": {
                "model": run["model"], "signature": "serving_default",
                "inputs": {"noise": f"float32 [N, {run['latent_dim']}], standard normal"}
                | ({"label": "int32 [N], a class index (labels.txt)"} if conditional else {}),
                "output": "images: uint8 [N, 28, 28, 1], light digit on dark",
            },
        },
        tflite=export_lib.TFLiteFiles(f"{APP}_{run['model']}", "serving_default",
                                      variants=TFLITE_VARIANTS, check=check),
        report={"run": str(run_dir.resolve()), "model": run["model"],
                "check_samples": CHECK_SAMPLES},
        progress=not quiet,
    )
    if not quiet:
        runner.print_export(report)
    return report


def served_figures(version_dir: Path, run_dir: Path | None = None,
                   samples: int = EVALUATION_SAMPLES) -> list[dict]:
    """The skew check. A generator's held-out examples are `evaluate`'s draws: the same noise
    (and labels) go through each served path, the images are read back as a user gets them
    (uint8 frames, PNG bytes, PNG files) and judged by the same LeNet-5. One row per path and
    figure: label accuracy (cGAN), mode coverage, most grey levels off Keras. The CLI draws its
    own noise (`generate --seed`): it is scored beside `evaluate`'s measure on that noise."""
    import io
    import tempfile

    from PIL import Image

    run_dir, generator, run, dataset, judge, _ = judged_run(run_dir)
    conditional, num_classes = run["model"] == "cgan", dataset.num_classes
    draws = dcgan.evaluation_draws(np.random.default_rng(EVALUATION_SEED), run["latent_dim"],
                                   num_classes, image_data.count(dataset.test) // 2, samples,
                                   conditional)
    inputs = {name: draws[name] for name in ("asked", "unconditional") if name in draws}
    expected = {name: dcgan.sample_frames(generator, *zy) for name, zy in inputs.items()}

    def rows(path: str, frames: dict, keras_frames: dict, asked: np.ndarray | None) -> list:
        figures = {}
        if conditional:
            figures["label accuracy"] = float((judge.classify(frames["asked"]) == asked).mean())
        figures["mode coverage"] = dcgan.mode_coverage(judge.classify(frames["unconditional"]),
                                                       num_classes)["covered"]
        figures["max grey levels off Keras"] = max(
            int(np.abs(frames[name].astype(np.int16) - keras_frames[name]).max())
            for name in frames)
        return [{"app": APP, "path": path, "figure": figure, "value": value,
                 "examples": samples} for figure, value in figures.items()]

    def read_pngs(encoded) -> np.ndarray:  # bytes or files
        return np.stack([np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes)
                                               else png)) for png in encoded])[..., None]

    asked = draws["asked"][1] if conditional else None
    signatures = tf.saved_model.load(str(version_dir)).signatures
    extra = Path(version_dir) / export_lib.EXTRA_DIR
    served = {"evaluate (Keras)": expected}  # path -> draw -> uint8 frames
    for name, (z, y) in inputs.items():
        request = {"noise": tf.constant(z)} | ({"label": tf.constant(y)} if conditional else {})
        for signature, output in (("serving_default", "images"), ("generate_png", "png_bytes")):
            frames = signatures[signature](**request)[output].numpy()
            served.setdefault(f"SavedModel {signature}", {})[name] = \
                frames if output == "images" else read_pngs(frames)
        for variant in TFLITE_VARIANTS:
            model_file = extra / f"{APP}_{run['model']}_{variant}.tflite"
            served.setdefault(f"LiteRT {variant}", {})[name] = tflite_frames(model_file, z, y)
    table = [row for path, frames in served.items() for row in rows(path, frames, expected, asked)]

    # The CLI: PNG files named for the digit asked, from the noise `--seed` draws.
    with tempfile.TemporaryDirectory() as folder:
        main(["generate", "--run-dir", str(run_dir), "--seed", str(EVALUATION_SEED),
              "--count", str(samples), "--output", folder])
        files = sorted(Path(folder).glob("*.png"), key=lambda path: path.stem[-4:])
        pngs = read_pngs(files)
    cli_asked = np.array([run["class_names"].index(path.stem[len(run["model"]) + 1 : -5])
                          for path in files]) if conditional else None
    noise = np.random.default_rng(EVALUATION_SEED).standard_normal((samples, run["latent_dim"]))
    keras_frames = dcgan.sample_frames(generator, noise.astype(np.float32), cli_asked)
    same = {"asked": keras_frames, "unconditional": keras_frames}
    return table + rows("evaluate (Keras), generate's noise", same, same, cli_asked) + rows(
        f"CLI generate --seed {EVALUATION_SEED}", {"asked": pngs, "unconditional": pngs}, same,
        cli_asked)


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the conditional GAN on the embedded digits, evaluated and exported.
    The judge is the digit OCR demo's LeNet-5 when it ran before on the same digits."""
    evaluator = digit_ocr.default_run_dir(digit_ocr.DEFAULT_MODEL)
    try:
        check_evaluator(evaluator, DEFAULT_DATA)
    except UsageError:
        evaluator = None  # trained into the run directory instead
    figures = train(TrainConfig(model="cgan", **QUICK, evaluator=evaluator, verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {
        "app": "image generation (cGAN)",
        "quality": f"label accuracy {figures['label_accuracy']:.0%}, FID-LeNet"
                   f" {figures['frechet_lenet']:.1f} (real vs real"
                   f" {figures['frechet_floor_real_vs_real']:.1f}, untrained"
                   f" {figures['frechet_untrained_generator']:.0f})",
        "SavedModel": report["saved_model"],
        ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report),
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.gan",
        description="Image generation with GANs (DCGAN, conditional GAN): train, evaluate with"
                    " a Frechet distance in LeNet-5's feature space, generate PNGs, export.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    model_help = "dcgan: unconditional; cgan: conditioned on the digit"

    def with_run_options(sub):
        sub.add_argument("--model", choices=MODELS,
                         help=f"{model_help}; read runs/gan/<model> (default: the run trained"
                              " last)")
        sub.add_argument("--run-dir", type=Path, help="the run directory to read")
        return sub

    evaluator_help = ("an apps.digit_ocr run directory trained on the same data whose LeNet-5"
                      " judges the images (default: <run-dir>/evaluator, trained when missing)")
    train_parser = commands.add_parser("train", help="train G against D")
    train_parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                              help=f"{model_help} (default: %(default)s)")
    train_parser.add_argument("--run-dir", type=Path,
                              help="run directory (default: runs/gan/<model>)")
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="digits (embedded, default), a folder of MNIST IDX files, tfds:NAME,"
             " or a folder of one subfolder of images per class",
    )
    train_parser.add_argument("--filters", type=int, default=dcgan.FILTERS,
                              help="width of both networks (default: %(default)s)")
    train_parser.add_argument("--evaluator", type=Path, help=evaluator_help)
    runner.add_training_options(train_parser, EPOCHS, BATCH_SIZE)
    runner.add_quick_option(train_parser, QUICK)

    evaluate_parser = with_run_options(commands.add_parser(
        "evaluate", help="Frechet distance (LeNet-5), label accuracy (cGAN), mode coverage"))
    evaluate_parser.add_argument("--evaluator", type=Path, help=evaluator_help)
    evaluate_parser.add_argument("--samples", type=int, default=EVALUATION_SAMPLES,
                                 help="images drawn for label accuracy and coverage"
                                      " (default: %(default)s)")

    generate_parser = with_run_options(commands.add_parser(
        "generate", help="PNG files from a trained generator"))
    generate_parser.add_argument("--output", type=Path, required=True, metavar="DIR",
                                 help="folder for the PNG files (created if missing)")
    generate_parser.add_argument("--count", type=int, default=100, help="default: %(default)s")
    generate_parser.add_argument("--digit", type=int,
                                 help="cgan: the digit to draw (default: every digit in turn)")
    generate_parser.add_argument("--grid", action="store_true",
                                 help="one sheet with all the images instead of a file each")
    generate_parser.add_argument("--seed", type=int, help="noise seed (default: fresh noise)")

    export_parser = with_run_options(commands.add_parser(
        "export", help="SavedModel version + .tflite files (float32, float16)"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return runner.with_quick_schedule(parser.parse_args(argv), train_parser, QUICK)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(runner.config_from_args(TrainConfig, args))
        return
    run = find_run(args.run_dir, args.model)
    run.announce()
    run_dir = run.path
    if args.command == "evaluate":
        evaluate(run_dir, args.evaluator, args.samples)
    elif args.command == "generate":
        paths = generate(args.output, args.count, args.digit, args.grid, run_dir, args.seed)
        print(f"{len(paths)} PNG file{'s' if len(paths) > 1 else ''} in {args.output}")
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
