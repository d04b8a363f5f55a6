"""Image captioning: a CNN reads the image into a grid of region features, an LSTM with visual
attention writes the caption, beam search picks it, BLEU-1..4 measures it.

    python -m apps.captioning train                          # generated shape scenes
    python -m apps.captioning train --decoder show-and-tell  # no attention, for comparison
    python -m apps.captioning train --data path/to/Flickr8k  # or .../captions_val2017.json
    python -m apps.captioning train --data ../shared/data/flickr8k --encoder mobilenet_v2 \
        --encoder-weights ../shared/data/imagenet-weights/mobilenet_v2_1.0_224_no_top.weights.h5
    python -m apps.captioning train --data ... --encoder mobilenet_v2 --encoder-weights ... \
        --decoder transformer                                # the Transformer decoder instead
    python -m apps.captioning evaluate                       # BLEU-1..4, examples, attention.png
    python -m apps.captioning caption photo.png scene.jpg    # one caption per image
    python -m apps.captioning export                         # -> saved_models/captioning/<n>/
    python -m serving.litert_captioning MODEL.tflite scene.png  # numpy + LiteRT, no TensorFlow

The captioners, Show and Tell (Vinyals et al., 2015) and Show, Attend and Tell (Xu et al., 2015),
and their beam-search decoding are defined in `models/captioner.py`. On real photos,
`--encoder mobilenet_v2` trains `models/photo_captioner.py` instead: an ImageNet-pretrained
MobileNetV2 (frozen, its 7x7 grids computed once per run and cached on disk in float16,
`pipelines/region_grids.py`) under an attention LSTM with Xu et al.'s gate and doubly stochastic
attention, or with `--decoder transformer` the Transformer decoder of `layers/transformer.py`
cross-attending to the 49 regions; the best epoch is chosen by validation BLEU-4 and the beam
width and length penalty on validation too (`models/photo_training.py`). What photo runs do in
training and export beyond the scenes (the grid cache, `--members`, `--fine-tune-encoder`,
self-critical epochs, the int8 encoder) is in `apps/captioning_photos.py`; this file opens the
run, loads the data, and evaluates.

Quality is corpus BLEU-1..4 with sacreBLEU against all references of each held-out image
(multi-reference BLEU: an n-gram counts when any reference has it, clipped by the reference that
has it most often). On the generated scenes the held-out images show combinations of objects never
seen in training (`pipelines.shape_scenes`). Export writes a SavedModel whose `serving_default`
takes encoded image bytes and returns the caption, and `.tflite` files with an `encode` and a
`decode_step` signature (batch 1, builtin ops) whose greedy loop runs in numpy on LiteRT.
`served_figures` is the skew check: the held-out images through every served path, BLEU-4 each.
"""

import argparse
import dataclasses
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import captioning_photos, runner
from apps.runner import UsageError
from models import photo_captioner as photo
from models import self_critical as critic
from models.captioner import (
    ALPHA,
    BEAM_WIDTH,
    DECODER,
    DECODERS,
    EMBEDDING_DIM,
    UNITS,
    Captioner,
    attention_sheet,
    build_model,
    lite_archive,
    serving_archive,
)
from models.sequence_training import compile_teacher_forced
from pipelines import DataError, region_grids, shape_scenes, text_pairs
from pipelines import captions as caption_data
from pipelines.captions import bleu_scores, most_frequent_caption
from serving import export as export_lib

APP = "captioning"
PHOTO_ENCODER = photo.BACKBONE
DEFAULT_DATA = "scenes"
SCENES = shape_scenes.DEFAULT_SIZE
IMAGE_SIZE = shape_scenes.IMAGE_SIZE  # real photos are resized to this too (--image-size)
EPOCHS = 8
BATCH_SIZE = 64  # per replica
QUICK = {"scenes": 4000, "epochs": 6}  # `train --quick`, what `make demo` trains
LEARNING_RATE = 3e-3  # Adam, cosine decay after a short warm-up
MAX_TOKENS = 8000
MAX_CAPTION_TOKENS = 30  # longer training captions are cut (real captions run long)
EXAMPLES = 8
SHEET_IMAGES = 4  # held-out images in attention.png
SEED = 42
MODEL_BASE = Path("saved_models")
SELF_CRITICAL_EPOCHS = 3  # `self-critical`'s default
SCENE = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
         "units": UNITS, "embedding_dim": EMBEDDING_DIM, "image_size": IMAGE_SIZE}
# DECODERS caption the scenes (models/captioner.py), PHOTO_DECODERS the photos: --decoder
# transformer is for photos only (the scenes' LSTMs already reach BLEU-4 above 80).
PHOTO_DECODERS = photo.DECODERS  # attention (the LSTM) or transformer
TRAIN_DECODERS = (*DECODERS, *(d for d in PHOTO_DECODERS if d not in DECODERS))


@dataclass(kw_only=True)
class TrainConfig(runner.TrainingConfig):
    """`train`'s options. `objects` fixes the generated scenes' object count (None: 1 to 3);
    `learning_rate` is the peak rate for one replica's batch (scaled with the replicas);
    `backbone` is a `keras.applications` encoder (--encoder) with its local weights file
    (--encoder-weights); `evaluate_after`: BLEU on the held-out split once trained."""

    data: str = DEFAULT_DATA
    # None: SCENE's value on the generated scenes, captioning_photos.DEFAULTS' on photos
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = SEED
    decoder: str = DECODER
    scenes: int = SCENES
    objects: int | None = None
    image_size: int | None = None
    units: int | None = None
    embedding_dim: int | None = None
    learning_rate: float | None = None
    backbone: str | None = None
    backbone_weights: str | None = None
    encoder_alpha: float | None = None
    min_count: int = region_grids.MIN_COUNT
    self_critical_epochs: int = 0  # photos: self-critical training after cross-entropy
    self_critical_learning_rate: float = critic.LEARNING_RATE
    self_critical_reward: str = critic.REWARD
    members: int = 1  # photos: an ensemble of this many attention LSTMs
    fine_tune_encoder: bool = False  # photos: then MobileNetV2's top blocks train too
    fine_tune_epochs: int = photo.FINE_TUNE_EPOCHS
    evaluate_after: bool = True

    def __post_init__(self):
        if self.decoder not in TRAIN_DECODERS:
            raise UsageError(f"--decoder {self.decoder}: choose from"
                             f" {', '.join(TRAIN_DECODERS)}")
        if self.backbone == PHOTO_ENCODER:
            if self.decoder not in PHOTO_DECODERS:
                raise UsageError(f"--decoder {self.decoder}: with --encoder {PHOTO_ENCODER}"
                                 f" choose from {', '.join(PHOTO_DECODERS)}")
            if self.data == DEFAULT_DATA:
                raise UsageError(f"--encoder {PHOTO_ENCODER} captions photos: --data names a"
                                 " Flickr8k folder or a COCO captions JSON")
            self._fill_defaults(captioning_photos.DEFAULTS)
            self.encoder_alpha = captioning_photos.encoder_alpha(self.backbone_weights,
                                                                 self.encoder_alpha)
        elif self.decoder not in DECODERS:
            raise UsageError(f"--decoder {self.decoder} captions photos only: add --encoder"
                             f" {PHOTO_ENCODER} (with --data and --encoder-weights)")
        elif self.backbone and not hasattr(keras.applications, self.backbone):
            raise UsageError(f"--encoder {self.backbone}: not a keras.applications model")
        else:
            self._fill_defaults(SCENE)
        if self.backbone_weights and not Path(self.backbone_weights).is_file():
            raise DataError(f"{self.backbone_weights}: no such weights file (--encoder-weights)")
        if self.members < 1:
            raise UsageError(f"--members {self.members}: at least 1")
        # A lone run's self-critical epochs would read grids that fine-tuning then changes; an
        # ensemble's last member trains them on the fine-tuned grids
        if self.fine_tune_encoder and (self.backbone != PHOTO_ENCODER
                                       or (self.self_critical_epochs and self.members == 1)):
            raise UsageError(f"--fine-tune-encoder: for photos (--encoder {PHOTO_ENCODER}),"
                             " without self-critical epochs unless --members is 2 or more"
                             " (their grids would be stale)")
        if self.members > 1 and (self.backbone != PHOTO_ENCODER or self.decoder != "attention"):
            raise UsageError(f"--members {self.members}: an ensemble is of attention LSTMs on"
                             f" photos (--encoder {PHOTO_ENCODER})")

    def _fill_defaults(self, defaults: dict):
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)


def default_run_dir(data: str = DEFAULT_DATA, decoder: str = DECODER) -> Path:
    name = "scenes" if data == DEFAULT_DATA else Path(data).name.split(".")[0]
    return runner.RUNS_ROOT / APP / f"{name}-{decoder}"


def find_run(run_dir: Path | None = None) -> runner.RunDir:
    """--run-dir, else the run trained last."""
    return runner.find_run(APP, run_dir, fallback=default_run_dir())


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def load_data(data: str = DEFAULT_DATA, scenes: int = SCENES, objects: int | None = None
              ) -> caption_data.CaptionData:
    if data == DEFAULT_DATA:
        splits = shape_scenes.generate(scenes, objects=objects)
        return caption_data.CaptionData(
            f"generated shape scenes ({scenes})",
            *(caption_data.Split(*splits[s]) for s in ("train", "validation", "test")))
    return caption_data.load(data)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None) -> dict:
    """Trains on the training split, keeps the epoch with the best validation token accuracy,
    reports BLEU-1..4 on the held-out split. A re-run of a killed run resumes exactly from its
    newest backup (`runner.fit`)."""
    config = config or TrainConfig()
    if config.backbone == PHOTO_ENCODER:
        return train_photos(config)
    run = runner.TrainingRun(APP, config, default_run_dir(config.data, config.decoder))
    dataset = load_data(config.data, config.scenes, config.objects)
    if not len(dataset.train) or not len(dataset.validation) or not len(dataset.test):
        raise DataError(f"{dataset.name}: a split is empty (train {len(dataset.train)},"
                        f" validation {len(dataset.validation)}, test {len(dataset.test)})")
    every = config.data != DEFAULT_DATA
    train_index, train_captions = caption_data.caption_pairs(dataset.train, every)
    val_index, val_captions = caption_data.caption_pairs(dataset.validation, every)
    tokenizer = caption_data.build_tokenizer(train_captions, MAX_TOKENS)
    length = min(MAX_CAPTION_TOKENS, max(len(i) for i in tokenizer.id_lists(train_captions)))
    train_images = caption_data.image_array(dataset.train.images, config.image_size)
    val_images = caption_data.image_array(dataset.validation.images, config.image_size)
    train_ids = caption_data.caption_ids(tokenizer, train_captions, length)

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return caption_data.batches(train_images, train_index, train_ids, run.global_batch,
                                    shuffle=True, seed=config.seed + epoch,
                                    multiple_of=run.replicas)

    validation_batches = caption_data.batches(
        val_images, val_index, caption_data.caption_ids(tokenizer, val_captions, length),
        run.global_batch, multiple_of=run.replicas)
    steps_per_epoch = int(epoch_batches(0).cardinality())
    learning_rate = run.scaled_learning_rate(config.learning_rate)
    run.start(dataset=dataset.name, max_length=length + 1, train_images=len(dataset.train),
              train_captions=len(train_index), global_learning_rate=learning_rate)
    text_pairs.write_vocabulary(run.path / "vocab.txt", tokenizer.vocabulary)
    with run.strategy.scope():
        model = build_model(tokenizer.size, config.decoder, config.image_size,
                            config.embedding_dim, config.units, backbone=config.backbone,
                            backbone_weights=config.backbone_weights)
        compile_teacher_forced(model, config.epochs * steps_per_epoch, learning_rate)
    steps = run.fit(model, epoch_batches, steps_per_epoch=steps_per_epoch,
                    validation_data=validation_batches, monitor="val_masked_accuracy")
    metrics = {"training_seconds": run.training_seconds, "epochs": config.epochs,
               "steps": steps, "train_images": len(dataset.train)}
    if config.evaluate_after:
        metrics.update(held_out_metrics(load_captioner(run.path), dataset, run.path))
        print(f"{APP} ({config.decoder}) on {dataset.name}: held-out BLEU-1..4 "
              + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
              + f" ({metrics['test_images']} images), run directory {run.path}")
    return run.finish(metrics)


def train_photos(config: TrainConfig) -> dict:
    """--encoder mobilenet_v2 (`apps.captioning_photos`): the photos' grids cached once, the
    decoder trained on them with its best epoch by validation BLEU-4, the options' later phases,
    the beam width and length penalty chosen on validation (decoding.json), the test figures."""
    decoder = f"{PHOTO_ENCODER}-transformer" if config.decoder == "transformer" else PHOTO_ENCODER
    run = runner.TrainingRun(APP, config, default_run_dir(config.data, decoder))
    return run.finish(captioning_photos.train(run, config, load_data(config.data)))


def self_critical(run_dir: Path | None = None, epochs: int = SELF_CRITICAL_EPOCHS,
                  learning_rate: float | None = None, reward: str = critic.REWARD,
                  evaluate_after: bool = True) -> dict:
    """The `self-critical` command: more self-critical epochs on a trained photo run, in place
    (a killed one resumes from its backup), then decoding chosen and the test figures again."""
    run = find_run(run_dir)
    stored = run.config()
    if stored.get("backbone") != PHOTO_ENCODER:
        raise UsageError(f"{run.path}: self-critical training is for photo runs (--encoder"
                         f" {PHOTO_ENCODER})")
    if stored.get("members", 1) > 1:
        raise UsageError(f"{run.path}: an ensemble trains its last member's self-critical"
                         " epochs with it (train --members N --self-critical-epochs K)")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in stored.items() if k in names}
                         | {"self_critical_epochs": epochs, "evaluate_after": evaluate_after,
                            "self_critical_reward": reward, "run_dir": run.path}
                         | ({"self_critical_learning_rate": learning_rate}
                            if learning_rate else {}))
    metrics = captioning_photos.self_critical(run.path, config, load_data(config.data))
    run.write_metrics(metrics)
    return metrics


def decoding_of(run: runner.RunDir, beam_width: int | None, alpha: float | None
                ) -> tuple[int, float]:
    return runner.chosen_decoding(run.path, beam_width, alpha, (BEAM_WIDTH, ALPHA))


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_captioner(run_dir: Path | None = None) -> Captioner:
    """A run's best.keras and vocabulary (the run trained last by default), in float32."""
    run = find_run(run_dir)
    return Captioner.load(run.file("best.keras"), run.file("vocab.txt"),
                          run.config()["max_length"])


def held_out_data(run: runner.RunDir) -> caption_data.CaptionData:
    """The data a run was trained on, as run.json names it."""
    config = run.config()
    return load_data(config["data"], config["scenes"], config["objects"])


def held_out_metrics(captioner: Captioner, dataset: caption_data.CaptionData, run_dir: Path,
                     beam_width: int = BEAM_WIDTH, alpha: float = ALPHA) -> dict:
    """BLEU-1..4 of the beam-search captions of the test split, with the most-frequent-caption
    baseline; evaluation.json, examples and attention.png."""
    images = caption_data.image_array(dataset.test.images, captioner.image_size)
    references = dataset.test.references
    hypotheses = captioner.captions(images, beam_width, alpha)
    frequent = most_frequent_caption(dataset.train)
    metrics = {**bleu_scores(hypotheses, references), "test_images": len(references),
               "beam_width": beam_width,
               "exact_match": float(np.mean([h in r for h, r in zip(hypotheses, references)])),
               "most_frequent_caption": frequent,
               "most_frequent_bleu4": bleu_scores([frequent] * len(references),
                                                  references)["bleu4"],
               "examples": [{"references": r, "caption": h} for r, h in
                            list(zip(references, hypotheses))[:EXAMPLES]]}
    attention_sheet(captioner, images[:SHEET_IMAGES], Path(run_dir) / "attention.png",
                    beam_width=beam_width, alpha=alpha)
    runner.write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def is_photo_run(run: runner.RunDir) -> bool:
    return run.config().get("backbone") == PHOTO_ENCODER


def evaluate(run_dir: Path | None = None, beam_width: int | None = None,
             alpha: float | None = None) -> dict:
    run = find_run(run_dir)
    captioner = load_captioner(run.path)
    dataset = held_out_data(run)
    beam_width, alpha = decoding_of(run, beam_width, alpha)
    photo_run = is_photo_run(run)
    metrics = (captioning_photos.held_out_metrics if photo_run else held_out_metrics)(
        captioner, dataset, run.path, beam_width, alpha)
    runner.print_table([{"caption": e["caption"], "first reference": e["references"][0]}
                        for e in metrics["examples"]])
    untrained = (f"; untrained copy BLEU-4 {metrics['untrained_bleu4']:.1f}; CIDEr-D"
                 f" {100 * metrics['cider_d']:.1f} (most frequent caption"
                 f" {100 * metrics['most_frequent_cider_d']:.1f})" if photo_run else "")
    print("\nBLEU-1..4 " + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
          + f" on {metrics['test_images']} held-out images of {dataset.name} (beam {beam_width},"
          f" length penalty {alpha:g}); most frequent caption BLEU-4"
          f" {metrics['most_frequent_bleu4']:.1f}{untrained}\n"
          f"{metrics['bleu_signature']}\nattention.png and evaluation.json in {run.path}")
    return metrics


# ---------------------------------------------------------------------------------------------
# caption
# ---------------------------------------------------------------------------------------------


def read_images(paths: list[Path], size: int) -> np.ndarray:
    """Image files -> uint8 [n, size, size, 3]; DataError names a missing or unreadable one."""
    caption_data.check_images([str(p) for p in paths], Path("caption"))
    return caption_data.image_array([str(p) for p in paths], size)


def caption(paths: list[Path], run_dir: Path | None = None, beam_width: int | None = None,
            alpha: float | None = None) -> list[str]:
    captioner = load_captioner(run_dir)
    beam_width, alpha = decoding_of(find_run(run_dir), beam_width, alpha)
    return captioner.captions(read_images(paths, captioner.image_size), beam_width, alpha)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


TFLITE_SIGNATURES = ("encode", "decode_step")
# No full-int8 variant: as for the translator, TF 2.21's converter is not reliable calibrating a
# two-signature RNN model; "dynamic" (int8 weights, float activations) is the small one.
LITE_VARIANTS = ("float32", "float16", "dynamic")
LITE_CHECK_IMAGES = 20  # held-out images decoded by LiteRT and Keras, token for token


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False,
           check_images: int = LITE_CHECK_IMAGES) -> dict:
    """Publishes a run as the next version under `model_base/captioning/`: the SavedModel, and
    in assets.extra/ the .tflite variants, vocab.txt and litert.json, each .tflite checked in the
    LiteRT interpreter against the Keras greedy decode of held-out images (a photo run:
    `apps.captioning_photos.export`)."""
    from serving.litert_captioning import CaptionLiteRT

    run = find_run(run_dir)
    captioner = load_captioner(run.path)
    data = held_out_data(run)
    images = caption_data.image_array(data.test.images[:check_images], captioner.image_size)
    keras_greedy = [[int(t) for t in ids]
                    for ids in captioner.best_ids(images, beam_width=1, alpha=0.0)]

    def check(path: Path) -> dict:
        lite = CaptionLiteRT(path)
        same = [lite.greedy_ids(image)[0] == ids for image, ids in zip(images, keras_greedy)]
        return {"same_tokens_as_keras_greedy": float(np.mean(same))}

    if is_photo_run(run):
        return captioning_photos.export(run, captioner, Path(model_base) / APP, data.train,
                             decoding_of(run, None, None), check, len(images), quiet)
    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(captioner),
        assets={
            "vocab.txt": run.file("vocab.txt"),
            # What `serving.litert_captioning` needs to run the .tflite files without TensorFlow.
            "litert.json": {
                "kind": "captioning", "signatures": list(TFLITE_SIGNATURES),
                "image_size": captioner.image_size, "max_length": captioner.max_length,
                "ids": text_pairs.SPECIAL_IDS,
                "vocab": "vocab.txt"},
        },
        tflite=export_lib.TFLiteFiles(APP, TFLITE_SIGNATURES, variants=LITE_VARIANTS,
                                      check=check, archive=lite_archive(captioner)),
        report={"run": str(run.path.resolve()), "checked_images": len(images)},
        progress=not quiet,
    )
    if not quiet:
        runner.print_export(report)
    return report


def served_figures(version_dir: Path, run_dir: Path | None = None, examples: int | None = None
                   ) -> list[dict]:
    """The held-out images `evaluate` scores, sent as a user sends them (the files themselves,
    or the generated scenes as PNG files), through every served path: held-out BLEU-4 per path,
    evaluate's first. The LiteRT runner decodes greedily: it is beside Keras' greedy decode."""
    from PIL import Image

    from serving.litert_captioning import CaptionLiteRT, read_image

    run = find_run(run_dir)
    captioner = load_captioner(run.path)
    test = held_out_data(run).test
    count = len(test) if examples is None else min(examples, len(test))
    references = test.references[:count]
    images = caption_data.image_array(test.images[:count], captioner.image_size)
    served = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    beam, greedy = f"test BLEU-4 (beam {BEAM_WIDTH})", "test BLEU-4 (greedy)"
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(test.images, np.ndarray):
            files = [Path(folder, f"{i:05d}.png") for i in range(count)]
            for path, image in zip(files, test.images):
                Image.fromarray(image).save(path)
        else:
            files = [Path(path) for path in test.images[:count]]
        encoded = [path.read_bytes() for path in files]
        read = {("evaluate (Keras)", beam): captioner.captions(images),
                ("SavedModel serving_default", beam): [
                    text.decode() for start in range(0, count, 256) for text in served(
                        images=tf.constant(encoded[start : start + 256]))["caption"].numpy()],
                ("CLI caption", beam): caption(files, run.path),
                ("Keras greedy", greedy): captioner.captions(images, 1, 0.0)}
        for variant in LITE_VARIANTS:
            lite = CaptionLiteRT(Path(version_dir, export_lib.EXTRA_DIR, f"{APP}_{variant}.tflite"))
            read[f"LiteRT {variant}", greedy] = [lite.caption(read_image(path, lite.size))
                                                 for path in files]
    return [{"app": APP, "path": path, "figure": figure,
             "value": bleu_scores(texts, references)["bleu4"], "examples": count}
            for (path, figure), texts in read.items()]


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def demo(model_base: Path = MODEL_BASE) -> dict:
    """`make demo`'s share: the attention captioner on generated scenes, evaluated, exported."""
    metrics = train(TrainConfig(**QUICK, verbose=2))
    report = export(model_base=model_base, quiet=True)
    return {"app": "captioning (CNN + attention LSTM, shape scenes)",
            "quality": f"BLEU-4 {metrics['bleu4']:.1f} ({metrics['test_images']} held-out"
                       " images of unseen combinations)",
            "SavedModel": report["saved_model"],
            ".tflite KiB f32/f16/dyn/int8": export_lib.variant_sizes(report)}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m apps.captioning",
        description="Image captioning: CNN regions + LSTM with attention, beam search,"
                    " BLEU-1..4; exports an image-bytes-to-caption SavedModel.")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_run_dir(sub):
        sub.add_argument("--run-dir", type=Path, help="run directory (default: the last one)")
        return sub

    def with_search(sub):
        sub.add_argument("--beam-width", type=int, default=None,
                         help=f"1 is greedy decoding (default: what training chose on"
                              f" validation, else {BEAM_WIDTH})")
        sub.add_argument("--alpha", type=float, default=None,
                         help=f"GNMT length penalty exponent (default: what training chose"
                              f" on validation, else {ALPHA})")
        return sub

    train_parser = commands.add_parser("train", help="train a captioner")
    train_parser.add_argument("--run-dir", type=Path,
                              help="run directory (default: runs/captioning/<data>-<decoder>)")
    train_parser.add_argument(
        "--data", default=DEFAULT_DATA,
        help="scenes (generated shape scenes, default), a Flickr8k folder or a COCO"
             " captions_*.json")
    train_parser.add_argument("--decoder", choices=TRAIN_DECODERS, default=DECODER,
                              help=f"transformer: photos only (--encoder {PHOTO_ENCODER}), the"
                                   " Transformer decoder over the 7x7 regions"
                                   " (default: %(default)s)")
    train_parser.add_argument("--encoder", dest="backbone", default=None, metavar="NAME",
                              help=f"{PHOTO_ENCODER}: the photo captioner on an ImageNet-"
                                   "pretrained MobileNetV2 (frozen, grids cached); or a"
                                   " keras.applications name (e.g. MobileNetV2) in place of"
                                   " the small CNN trained from scratch")
    train_parser.add_argument("--encoder-weights", dest="backbone_weights", default=None,
                              metavar="PATH",
                              help="local .weights.h5 file for --encoder (nothing is"
                                   f" downloaded); with {PHOTO_ENCODER} also 'imagenet'"
                                   " (downloads)")
    train_parser.add_argument("--scenes", type=int, default=SCENES,
                              help="generated scenes (default: %(default)s)")
    train_parser.add_argument("--objects", type=int, choices=(1, 2, 3),
                              help="objects per generated scene (default: 1 to 3)")

    def scenes_and_photos(name):
        return f"default: {SCENE[name]}, photos {captioning_photos.DEFAULTS[name]}"

    train_parser.add_argument("--image-size", type=int,
                              help="images are resized to this square"
                                   f" ({scenes_and_photos('image_size')})")
    train_parser.add_argument("--units", type=int, help=scenes_and_photos("units"))
    train_parser.add_argument("--learning-rate", type=float,
                              help="peak Adam learning rate for one replica's batch; N"
                                   " replicas train at N times it"
                                   f" ({scenes_and_photos('learning_rate')})")
    captioning_photos.add_train_options(train_parser)
    runner.add_training_options(train_parser, None, None, scenes_and_photos("epochs"),
                                scenes_and_photos("batch_size"))
    runner.add_quick_option(train_parser, QUICK)

    with_search(with_run_dir(commands.add_parser(
        "evaluate", help="BLEU-1..4 on held-out images, examples, attention.png")))
    caption_parser = with_search(with_run_dir(commands.add_parser(
        "caption", help="one caption per image file")))
    caption_parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    critic_parser = with_run_dir(commands.add_parser(
        "self-critical", help="photo runs: self-critical training of the best model on its"
                              " own sampled captions (reward CIDEr-D), then evaluate"))
    critic_parser.add_argument("--epochs", type=int, default=SELF_CRITICAL_EPOCHS,
                               help="default: %(default)s")
    critic_parser.add_argument("--learning-rate", type=float, default=critic.LEARNING_RATE,
                               help="Adam (default: %(default)s)")
    critic_parser.add_argument("--reward", choices=critic.REWARDS, default=critic.REWARD,
                               help="what a sampled caption earns: CIDEr-D or sentence BLEU-4"
                                    " (default: %(default)s)")
    export_parser = with_run_dir(commands.add_parser("export", help="SavedModel version"))
    export_parser.add_argument("--model-base", type=Path, default=MODEL_BASE,
                               help="default: %(default)s")
    return runner.with_quick_schedule(parser.parse_args(argv), train_parser, QUICK)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.command == "train":
        runner.configure(args)
        train(runner.config_from_args(TrainConfig, args))
        return
    run = find_run(args.run_dir)
    run.announce()
    run_dir = run.path
    if args.command == "evaluate":
        evaluate(run_dir, args.beam_width, args.alpha)
    elif args.command == "self-critical":
        self_critical(run_dir, args.epochs, args.learning_rate, args.reward)
    elif args.command == "caption":
        for path, text in zip(args.images, caption(args.images, run_dir, args.beam_width,
                                                   args.alpha)):
            print(f"{path}: {text}")
        sys.stdout.flush()
    elif args.command == "export":
        export(run_dir, args.model_base)


if __name__ == "__main__":
    runner.run_cli(main)
