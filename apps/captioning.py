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
width and length penalty on validation too (`models/photo_training.py`).

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
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import runner
from apps.runner import UsageError
from models import photo_captioner as photo
from models import photo_training
from models import self_critical as critic
from models.captioner import (
    ALPHA,
    BEAM_WIDTH,
    DECODER,
    DECODERS,
    EMBEDDING_DIM,
    UNITS,
    Captioner,
    build_model,
    lite_archive,
    serving_archive,
)
from models.sequence_training import (
    MaskedAccuracy,
    MaskedCrossEntropy,
    in_float32,
    warmup_cosine_adam,
)
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
WARMUP_SHARE = 0.05
CLIP_NORM = 1.0
MAX_TOKENS = 8000
MAX_CAPTION_TOKENS = 30  # longer training captions are cut (real captions run long)
EXAMPLES = 8
SEED = 42
MODEL_BASE = Path("saved_models")
SELF_CRITICAL_EPOCHS = 3  # `self-critical`'s default
# --encoder mobilenet_v2 on photos: the defaults of the options left as they are; a batch is 32
# photos, each with all of its (5) captions.
PHOTO = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "units": 512,
         "embedding_dim": 256, "image_size": 224}
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
    # None: SCENE's value on the generated scenes, PHOTO's with --encoder mobilenet_v2
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
            self._photo_defaults()
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
        if self.fine_tune_encoder and (self.backbone != PHOTO_ENCODER
                                       or self.self_critical_epochs):
            raise UsageError(f"--fine-tune-encoder: for photos (--encoder {PHOTO_ENCODER}),"
                             " without self-critical epochs (their grids would be stale)")
        if self.members > 1 and (self.backbone != PHOTO_ENCODER or self.decoder != "attention"
                                 or self.self_critical_epochs):
            raise UsageError(f"--members {self.members}: an ensemble is of attention LSTMs on"
                             f" photos (--encoder {PHOTO_ENCODER}), without self-critical"
                             " epochs")

    def _fill_defaults(self, defaults: dict):
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _photo_defaults(self):
        """--encoder mobilenet_v2: photos, PHOTO's defaults, the weights file checked (alpha)."""
        if self.data == DEFAULT_DATA:
            raise UsageError(f"--encoder {PHOTO_ENCODER} captions photos: --data names a"
                             " Flickr8k folder or a COCO captions JSON")
        self._fill_defaults(PHOTO)
        if not self.backbone_weights:
            raise UsageError(f"--encoder {PHOTO_ENCODER} needs --encoder-weights: a local"
                             " .weights.h5 file, or imagenet (downloads)")
        if self.backbone_weights == "imagenet":
            self.encoder_alpha = self.encoder_alpha or 1.0
        else:
            self.encoder_alpha = photo.check_backbone_weights(self.backbone_weights,
                                                        self.encoder_alpha)


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


def caption_pairs(split: caption_data.Split, every_reference: bool
                  ) -> tuple[list[int], list[str]]:
    """(image index, caption) training pairs: every reference, or only the first (the scenes'
    canonical phrasing; the others stay references for BLEU)."""
    pairs = [(i, refs[j]) for i, refs in enumerate(split.references)
             for j in range(len(refs) if every_reference else 1)]
    return [i for i, _ in pairs], [c for _, c in pairs]


def build_tokenizer(captions: list[str], max_tokens: int = MAX_TOKENS) -> text_pairs.Tokenizer:
    standardized = [s.decode() for s in
                    text_pairs.standardize(tf.constant(captions), lowercase=True).numpy().tolist()]
    vocabulary = text_pairs.adapt_vocabulary(standardized, "word", max_tokens, special=True)
    return text_pairs.Tokenizer(vocabulary, "word", lowercase=True)


def caption_ids(tokenizer: text_pairs.Tokenizer, captions: list[str], length: int) -> np.ndarray:
    """int32 [n, length + 2]: [start] tokens [end], 0-padded, cut to `length` tokens."""
    out = np.zeros([len(captions), length + 2], np.int32)
    for row, ids in enumerate(tokenizer.id_lists(captions)):
        ids = ids[:length]
        out[row, : len(ids) + 2] = [text_pairs.START, *ids, text_pairs.END]
    return out


def batches(images: np.ndarray, index: list[int], ids: np.ndarray, batch_size: int,
            shuffle: bool = False, seed: int = SEED, multiple_of: int = 1) -> tf.data.Dataset:
    """((image uint8 [b, H, W, 3], caption_in [b, T]), caption_out [b, T]), teacher forcing."""
    count = len(index) - len(index) % multiple_of if len(index) >= multiple_of else len(index)
    data = tf.data.Dataset.from_tensor_slices((np.asarray(index[:count], np.int32), ids[:count]))
    if shuffle:  # `train` builds each epoch's pipeline afresh, with its own seed
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=False)
    table = tf.constant(images)
    # `count` and the batch are multiples of the replicas, so every batch splits evenly (Keras
    # 3.15 under MirroredStrategy fails on one that does not).
    data = data.batch(batch_size)
    return data.map(lambda i, c: ((tf.gather(table, i), c[:, :-1]), c[:, 1:]),
                    num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def compile_model(model: keras.Model, steps: int, learning_rate: float = LEARNING_RATE,
                  label_smoothing: float = 0.0):
    """Adam with warm-up and cosine decay over `steps`, peaking at `learning_rate`: the rate for
    the global batch (`train` scales the per-replica rate). The loss and the clipping see the
    whole global batch under MirroredStrategy (`models.sequence_training`)."""
    model.compile(optimizer=warmup_cosine_adam(steps, learning_rate, WARMUP_SHARE, CLIP_NORM),
                  loss=MaskedCrossEntropy(label_smoothing), metrics=[MaskedAccuracy()])
    return model


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
    train_index, train_captions = caption_pairs(dataset.train, every)
    val_index, val_captions = caption_pairs(dataset.validation, every)
    tokenizer = build_tokenizer(train_captions)
    length = min(MAX_CAPTION_TOKENS, max(len(i) for i in tokenizer.id_lists(train_captions)))
    train_images = caption_data.image_array(dataset.train.images, config.image_size)
    val_images = caption_data.image_array(dataset.validation.images, config.image_size)
    train_ids = caption_ids(tokenizer, train_captions, length)

    def epoch_batches(epoch: int) -> tf.data.Dataset:  # the same batches in every process
        return batches(train_images, train_index, train_ids, run.global_batch, shuffle=True,
                       seed=config.seed + epoch, multiple_of=run.replicas)

    validation_batches = batches(val_images, val_index,
                                 caption_ids(tokenizer, val_captions, length), run.global_batch,
                                 multiple_of=run.replicas)
    steps_per_epoch = int(epoch_batches(0).cardinality())
    learning_rate = run.scaled_learning_rate(config.learning_rate)
    run.start(dataset=dataset.name, max_length=length + 1, train_images=len(dataset.train),
              train_captions=len(train_index), global_learning_rate=learning_rate)
    text_pairs.write_vocabulary(run.path / "vocab.txt", tokenizer.vocabulary)
    with run.strategy.scope():
        model = build_model(tokenizer.size, config.decoder, config.image_size,
                            config.embedding_dim, config.units, backbone=config.backbone,
                            backbone_weights=config.backbone_weights)
        compile_model(model, config.epochs * steps_per_epoch, learning_rate)
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
    """--encoder mobilenet_v2: the photos' grids cached once, the decoder trained on them, the
    best epoch by validation BLEU-4, then `--self-critical-epochs` of self-critical training
    (`self_critical`), the beam width and length penalty chosen on validation
    (decoding.json), then the test figures."""
    transformer = config.decoder == "transformer"
    run = runner.TrainingRun(APP, config, default_run_dir(
        config.data, f"{PHOTO_ENCODER}-transformer" if transformer else PHOTO_ENCODER))
    dataset = load_data(config.data)
    text = photo_texts(dataset, config.min_count)
    settings = {"alpha": config.encoder_alpha, "captions_per_photo": text.per_photo,
                "caption_length": text.length + 1, "image_size": config.image_size,
                "embedding_dim": config.embedding_dim, "units": config.units,
                "members": config.members}
    if transformer:  # photo_captioner's sizes, in run.json (the untrained copy is built from it)
        settings = {**{k: v for k, v in settings.items()
                       if k not in ("embedding_dim", "units", "members")},
                    "decoder": "transformer", "layers": photo.TRANSFORMER_LAYERS,
                    "heads": photo.TRANSFORMER_HEADS, "memory_dim": photo.D_MODEL,
                    "ff": photo.TRANSFORMER_FF, "dropout": photo.TRANSFORMER_DROPOUT}
    with run.strategy.scope():
        photo_model, grid_model = photo.build_photo_models(text.tokenizer.size, **settings,
                                                           weights=config.backbone_weights)
    photos = {"train": dataset.train.images, "validation": dataset.validation.images}
    cache = photo_grid_cache(run.path, photo_model, config)
    grids = region_grids.cached_grids(cache, photos, run.path)
    cut_grids = (region_grids.cached_grids(photo_grid_cache(run.path, photo_model, config,
                                                            cut=True), photos, run.path)
                 if config.fine_tune_encoder else None)

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(grids["train"], text.blocks["train"],
                                         run.global_batch, shuffle=True, seed=config.seed + epoch)

    steps_per_epoch = int(epoch_batches(0).cardinality())
    learning_rate = run.scaled_learning_rate(config.learning_rate)
    trained_before = (run.path / "metrics.json").is_file()
    run.start(dataset=dataset.name, max_length=text.length + 1, train_images=len(dataset.train),
              train_captions=text.per_photo * len(dataset.train), vocabulary=text.tokenizer.size,
              photo_settings=settings, global_learning_rate=learning_rate,
              photos_encoded=cache.computed)
    text_pairs.write_vocabulary(run.path / "vocab.txt", text.tokenizer.vocabulary)
    if config.members > 1:
        if trained_before:  # a finished run trained again: its members start afresh too
            for folder in run.path.glob("member_*"):
                shutil.rmtree(folder)
        metrics = train_members(run, config, text, grids, cut_grids, photo_model,
                                learning_rate)
        metrics.update(choose_and_evaluate(run.path, config, dataset, text, grids["validation"],
                                           cut_grids))
        return run.finish({**metrics, "train_images": len(dataset.train)})
    with run.strategy.scope():
        compile_model(grid_model, config.epochs * steps_per_epoch, learning_rate,
                      photo.LABEL_SMOOTHING if transformer else 0.0)
    validation = text.references["validation"]
    selection = photo_training.ValidationBLEU(
        photo_model, photo.GridCaptioner(photo_model, text.tokenizer, text.length + 1),
        grids["validation"], validation, run.path / "best.keras",
        best=runner.best_so_far(run.path, "val_bleu4") if run.resumed else None)
    steps = run.fit(grid_model, epoch_batches, steps_per_epoch=steps_per_epoch, monitor=None,
                    validation_data=region_grids.grid_batches(
                        grids["validation"], text.blocks["validation"], run.global_batch),
                    callbacks=[selection])
    metrics = {"training_seconds": run.training_seconds, "epochs": config.epochs,
               "steps": steps, "train_images": len(dataset.train),
               "best_val_bleu4": selection.best}
    if config.self_critical_epochs:
        metrics.update(self_critical_phase(run.path, config, text, grids, photo_model,
                                           grid_model, run.strategy))
    if config.fine_tune_encoder:
        metrics.update(fine_tune_phase(run.path, config, text, cut_grids, photo_model,
                                       run.strategy))
    metrics.update(choose_and_evaluate(run.path, config, dataset, text, grids["validation"],
                                       cut_grids))
    return run.finish(metrics)


def train_members(run: runner.TrainingRun, config: TrainConfig,
                  text: region_grids.PhotoCaptions, grids: dict, cut_grids: dict | None,
                  ensemble: keras.Model, learning_rate: float) -> dict:
    """`--members N`: N attention LSTMs on the same cached grids, each trained as a lone one is
    (member k draws its weights and shuffles with seed + k; member 0 shuffles as a lone run
    does), in `<run>/member_<k>/` with its history and its best epoch by validation BLEU-4;
    then joined into `ensemble`, the run's best.keras, whose words are the mean of the
    members' probabilities. With `cut_grids` (--fine-tune-encoder) the first member's
    `fine_tune_phase` trains MobileNetV2's top, and the others train on the grids of that top.
    A kill resumes inside the member it stopped in; a member with done.json is not trained
    again."""
    started, scores, members = time.perf_counter(), [], []
    for k in range(config.members):
        folder = run.path / f"member_{k}"
        done = folder / "done.json"
        if k == 1 and cut_grids is not None:  # the first member's fine-tuned top
            grids = {split: photo.top_grids(members[0], cut).astype(region_grids.CACHE_DTYPE)
                     for split, cut in cut_grids.items()}
        if not done.is_file():
            keras.utils.set_random_seed(config.seed + k)
            with run.strategy.scope():
                member, grid_model = photo.build_photo_models(
                    text.tokenizer.size, **{**run.dir.config()["photo_settings"], "members": 1},
                    weights=config.backbone_weights)
                if k and cut_grids is not None:  # the top its grids came through
                    member.get_layer("encoder").backbone.set_weights(
                        members[0].get_layer("encoder").backbone.get_weights())
            # Cross-entropy, then (the first member, with --fine-tune-encoder) the top: a kill
            # in the second phase resumes there, not in a retrained first one.
            trained = folder / "cross_entropy.json"
            if not trained.is_file():
                runner.write_json(trained, {"val_bleu4": train_member(
                    member, grid_model, folder, k, config, text, grids, learning_rate,
                    run.global_batch)})
            best = json.loads(trained.read_text())["val_bleu4"]
            if k == 0 and cut_grids is not None:
                best = fine_tune_phase(folder, config, text, cut_grids, member,
                                       run.strategy)["best_val_bleu4"]
            runner.write_json(done, {"val_bleu4": best})
        scores.append(json.loads(done.read_text())["val_bleu4"])
        members.append(keras.saving.load_model(folder / "best.keras", compile=False))
    photo.join_members(ensemble, members).save(run.path / "best.keras")
    joined = photo_training.ValidationBLEU(
        ensemble, photo.GridCaptioner(ensemble, text.tokenizer, text.length + 1),
        photo.top_grids(ensemble, cut_grids["validation"]) if cut_grids else grids["validation"],
        text.references["validation"], run.path / "best.keras")
    score = joined.score()[0]
    print(f"ensemble of {config.members}: validation BLEU-4 {score:.2f} (members "
          + ", ".join(f"{s:.2f}" for s in scores) + ")", flush=True)
    tuned = run.path / "member_0" / "fine_tune" / "start.json"
    return {"training_seconds": round(time.perf_counter() - started, 1),
            "epochs": config.epochs, "members": config.members, "member_val_bleu4": scores,
            "best_val_bleu4": score,
            **({"fine_tune_start_val_bleu4": json.loads(tuned.read_text())["val_bleu4"],
                "fine_tuned_val_bleu4": scores[0]} if cut_grids is not None else {})}


def train_member(member: keras.Model, grid_model: keras.Model, folder: Path, k: int,
                 config: TrainConfig, text: region_grids.PhotoCaptions, grids: dict,
                 learning_rate: float, global_batch: int) -> float:
    """Member k's cross-entropy epochs in `folder` (resumable), its best epoch by validation
    BLEU-4 saved as `folder`/best.keras; returns that BLEU-4."""
    resumed = runner.start_run(folder)

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(grids["train"], text.blocks["train"], global_batch,
                                         shuffle=True, seed=config.seed + 1000 * k + epoch)

    steps_per_epoch = int(epoch_batches(0).cardinality())
    with grid_model.distribute_strategy.scope():
        compile_model(grid_model, config.epochs * steps_per_epoch, learning_rate)
    selection = photo_training.ValidationBLEU(
        member, photo.GridCaptioner(member, text.tokenizer, text.length + 1),
        grids["validation"], text.references["validation"], folder / "best.keras",
        best=runner.best_so_far(folder, "val_bleu4") if resumed else None)
    print(f"member {k + 1} of {config.members}", flush=True)
    runner.fit(grid_model, epoch_batches, config.epochs, folder,
               steps_per_epoch=steps_per_epoch,
               validation_data=region_grids.grid_batches(
                   grids["validation"], text.blocks["validation"], global_batch),
               callbacks=[selection, *runner.training_callbacks(
                   folder, None, resumed=resumed is not None)],
               backup_every=config.backup_every, jit=config.jit, verbose=config.verbose)
    runner.plot_history(folder)
    return selection.best


def photo_texts(dataset: caption_data.CaptionData, min_count: int
                ) -> region_grids.PhotoCaptions:
    return region_grids.photo_captions({"train": dataset.train.references,
                                        "validation": dataset.validation.references}, min_count)


def photo_grid_cache(run_dir: Path, photo_model: keras.Model, config: TrainConfig,
                     cut: bool = False) -> region_grids.RegionCache:
    """The run's grid cache, keyed by what makes a grid: encoder, alpha, weights, size; with
    `cut`, the cache of MobileNetV2's output below the blocks --fine-tune-encoder trains."""
    weights = config.backbone_weights
    key = {"backbone": PHOTO_ENCODER, "alpha": config.encoder_alpha,
           "weights": weights if weights == "imagenet" else region_grids.file_digest(weights)}
    if cut:
        return region_grids.RegionCache(
            run_dir / "cut_grids", tf.function(photo.cut_grid_fn(photo_model)),
            {**key, "cut": photo.FINE_TUNE_CUT}, config.image_size)
    return region_grids.RegionCache(
        run_dir / "region_grids", tf.function(photo_model.get_layer("encoder").grid), key,
        config.image_size)


def self_critical_phase(run_dir: Path, config: TrainConfig, text: region_grids.PhotoCaptions,
                        grids: dict, photo_model: keras.Model, grid_model: keras.Model,
                        strategy) -> dict:
    """`config.self_critical_epochs` of self-critical training (`models.self_critical`) from the
    run's best.keras, in `<run>/self_critical` (its history.csv and backup: a kill resumes
    exactly with the `self-critical` command). best.keras is replaced only by an epoch whose
    validation BLEU-4 (`photo_training.SELF_CRITICAL_SELECTION`) beats the model it started
    from, scored the same way."""
    folder = Path(run_dir) / "self_critical"
    resumed = runner.start_run(folder)
    with strategy.scope():
        photo_model.load_weights(Path(run_dir) / "best.keras")
        trainer = critic.self_critical_trainer(
            grid_model, photo_model, text.blocks["train"],
            runner.scaled_learning_rate(config.self_critical_learning_rate, strategy),
            config.seed, config.self_critical_reward)
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(grids["train"], text.blocks["train"], global_batch,
                                         shuffle=True, seed=config.seed + 1000 + epoch)

    selection = photo_training.ValidationBLEU(
        photo_model, photo.GridCaptioner(photo_model, text.tokenizer, text.length + 1),
        grids["validation"], text.references["validation"], Path(run_dir) / "best.keras",
        decodings=photo_training.SELF_CRITICAL_SELECTION)
    starting = starting_score(folder, selection, resumed)
    started = time.perf_counter()
    runner.fit(trainer, epoch_batches, config.self_critical_epochs, folder,
               steps_per_epoch=int(epoch_batches(0).cardinality()),
               callbacks=[selection, keras.callbacks.CSVLogger(str(folder / "history.csv"),
                                                               append=True)],
               backup_every=config.backup_every, verbose=config.verbose)
    return {"self_critical_epochs": config.self_critical_epochs,
            "self_critical_seconds": round(time.perf_counter() - started, 1),
            "self_critical_start_val_bleu4": starting, "best_val_bleu4": selection.best}


def fine_tune_phase(run_dir: Path, config: TrainConfig, text: region_grids.PhotoCaptions,
                    cut_grids: dict, photo_model: keras.Model, strategy) -> dict:
    """`--fine-tune-encoder`, once the decoder has converged: MobileNetV2's top blocks train
    with the head and decoder (`photo.build_fine_tune_model`) for `config.fine_tune_epochs` at
    FINE_TUNE_LEARNING_RATE, from `run_dir`'s best.keras, in `<run_dir>/fine_tune` (its
    history and backup). Training reads the photos' cached outputs below those blocks, and
    validation recomputes its grids through them at every epoch. best.keras is replaced only
    by an epoch whose validation BLEU-4 beats the model it started from."""
    folder = Path(run_dir) / "fine_tune"
    resumed = runner.start_run(folder)
    with strategy.scope():
        photo_model.load_weights(Path(run_dir) / "best.keras")
        trainer = photo.build_fine_tune_model(photo_model, text.per_photo, text.length + 1)
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(cut_grids["train"], text.blocks["train"], global_batch,
                                         shuffle=True, seed=config.seed + 2000 + epoch)

    steps_per_epoch = int(epoch_batches(0).cardinality())
    with strategy.scope():
        compile_model(trainer, config.fine_tune_epochs * steps_per_epoch,
                      runner.scaled_learning_rate(photo.FINE_TUNE_LEARNING_RATE, strategy))
    selection = photo_training.ValidationBLEU(
        photo_model, photo.GridCaptioner(photo_model, text.tokenizer, text.length + 1),
        lambda: photo.top_grids(photo_model, cut_grids["validation"]),
        text.references["validation"], Path(run_dir) / "best.keras")
    starting = starting_score(folder, selection, resumed)
    started = time.perf_counter()
    runner.fit(trainer, epoch_batches, config.fine_tune_epochs, folder,
               steps_per_epoch=steps_per_epoch,
               callbacks=[selection, keras.callbacks.CSVLogger(str(folder / "history.csv"),
                                                               append=True)],
               backup_every=config.backup_every, verbose=config.verbose)
    photo_model.load_weights(Path(run_dir) / "best.keras")  # not the last epoch's weights
    return {"fine_tune_epochs": config.fine_tune_epochs,
            "fine_tune_seconds": round(time.perf_counter() - started, 1),
            "fine_tune_start_val_bleu4": starting, "fine_tuned_val_bleu4": selection.best,
            "best_val_bleu4": selection.best}


def starting_score(folder: Path, selection: photo_training.ValidationBLEU,
                   resumed) -> float:
    """What a phase's epochs must beat: the model it starts from, scored as they are, kept in
    `folder`/start.json so that a resumed phase compares against the same figure (and against
    its own epochs before the kill). Sets `selection.best`; returns the starting score."""
    start = folder / "start.json"
    if resumed and start.is_file():
        selection.best = max(json.loads(start.read_text())["val_bleu4"],
                             runner.best_so_far(folder, "val_bleu4") or 0.0)
        return json.loads(start.read_text())["val_bleu4"]
    selection.best = selection.score()[0]
    runner.write_json(start, {"val_bleu4": selection.best})
    return selection.best


def choose_and_evaluate(run_dir: Path, config: TrainConfig, dataset: caption_data.CaptionData,
                        text: region_grids.PhotoCaptions, validation_grids,
                        cut_grids: dict | None = None) -> dict:
    """The run's best.keras: beam width and length penalty chosen on validation
    (decoding.json), then, unless `evaluate_after` is off, the test figures. With `cut_grids`
    (a fine-tuned encoder) the validation grids are recomputed through the model's own top."""
    best = load_captioner(run_dir)
    if cut_grids is not None:
        validation_grids = photo.top_grids(best.model, cut_grids["validation"])
    decoding = photo_training.choose_decoding(
        photo.GridCaptioner(best.model, text.tokenizer, text.length + 1), validation_grids,
        text.references["validation"])
    runner.write_json(Path(run_dir) / "decoding.json", decoding)
    metrics = dict(decoding)
    if config.evaluate_after:
        metrics.update(photo_metrics(best, dataset, run_dir, decoding["beam_width"],
                                     decoding["alpha"]))
        print(f"{APP} ({PHOTO_ENCODER} {config.encoder_alpha}, {config.decoder}) on"
              f" {dataset.name}: test"
              " BLEU-1..4 " + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
              + f", CIDEr-D {100 * metrics['cider_d']:.1f} ({metrics['test_images']} photos),"
              f" run directory {run_dir}")
    return metrics


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
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in stored.items() if k in names}
                         | {"self_critical_epochs": epochs, "evaluate_after": evaluate_after,
                            "self_critical_reward": reward, "run_dir": run.path}
                         | ({"self_critical_learning_rate": learning_rate}
                            if learning_rate else {}))
    strategy = runner.choose_strategy(config.strategy)
    dataset = load_data(config.data)
    text = photo_texts(dataset, config.min_count)
    with strategy.scope():
        photo_model, grid_model = photo.build_photo_models(text.tokenizer.size,
                                                           **stored["photo_settings"])
    grids = region_grids.cached_grids(photo_grid_cache(run.path, photo_model, config),
                                      {"train": dataset.train.images,
                                       "validation": dataset.validation.images}, run.path)
    earlier = run.path / "metrics.json"
    metrics = {**(json.loads(earlier.read_text()) if earlier.is_file() else {}),
               **self_critical_phase(run.path, config, text, grids,
                                                      photo_model, grid_model, strategy)}
    metrics.update(choose_and_evaluate(run.path, config, dataset, text, grids["validation"]))
    run.write_metrics(metrics)
    return metrics


def photo_metrics(captioner: Captioner, dataset: caption_data.CaptionData, run_dir: Path,
                  beam_width: int, alpha: float) -> dict:
    settings = runner.RunDir(run_dir).config()["photo_settings"]
    return photo_training.evaluate_photos(captioner, dataset, Path(run_dir), beam_width, alpha,
                                          settings, EXAMPLES)


def decoding_of(run: runner.RunDir, beam_width: int | None, alpha: float | None
                ) -> tuple[int, float]:
    return runner.chosen_decoding(run.path, beam_width, alpha, (BEAM_WIDTH, ALPHA))


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def load_captioner(run_dir: Path | None = None) -> Captioner:
    """A run's best.keras and vocabulary (the run trained last by default), in float32."""
    run = find_run(run_dir)
    model = in_float32(keras.saving.load_model(run.file("best.keras"), compile=False))
    tokenizer = text_pairs.Tokenizer(text_pairs.read_vocabulary(run.file("vocab.txt")), "word",
                                     True)
    return Captioner(model, tokenizer, run.config()["max_length"])


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
    plot_attention(captioner, images[0], run_dir / "attention.png")
    runner.write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def plot_attention(captioner: Captioner, image: np.ndarray, path: Path) -> Path:
    """The image once per word, with the attention over its regions laid on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = captioner.best_ids(image[None])[0]
    weights = captioner.attention(image, ids)  # [words, regions]
    words = [t.decode() or "[end]" for t in captioner.tokenizer.tokens(tf.constant(ids)).numpy()]
    grid = int(round(np.sqrt(weights.shape[1])))
    columns = min(len(words), 6)
    rows = -(-len(words) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, word, w in zip(axes.flat, words, weights):
        axis.imshow(image)
        axis.imshow(w.reshape(grid, grid), cmap="magma", alpha=0.55, interpolation="bilinear",
                    extent=(0, image.shape[1], image.shape[0], 0))
        axis.set_title(word)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def is_photo_run(run: runner.RunDir) -> bool:
    return run.config().get("backbone") == PHOTO_ENCODER


def evaluate(run_dir: Path | None = None, beam_width: int | None = None,
             alpha: float | None = None) -> dict:
    run = find_run(run_dir)
    captioner = load_captioner(run.path)
    dataset = held_out_data(run)
    beam_width, alpha = decoding_of(run, beam_width, alpha)
    photos = is_photo_run(run)
    metrics = (photo_metrics if photos else held_out_metrics)(captioner, dataset, run.path,
                                                              beam_width, alpha)
    runner.print_table([{"caption": e["caption"], "first reference": e["references"][0]}
                        for e in metrics["examples"]])
    untrained = (f"; untrained copy BLEU-4 {metrics['untrained_bleu4']:.1f}; CIDEr-D"
                 f" {100 * metrics['cider_d']:.1f} (most frequent caption"
                 f" {100 * metrics['most_frequent_cider_d']:.1f})" if photos else "")
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
# Photo runs: an int8 encoder calibrated on PHOTO_CALIBRATION training photos, and the decoder.
PHOTO_CALIBRATION = 100
PHOTO_LITE = {"encoder": "captioning_encoder_int8.tflite", "decoder": "captioning_decoder",
              "variants": ("float32", "dynamic"), "signatures": ("encode", "decode_step")}
LITE_CHECK_IMAGES = 20  # held-out images decoded by LiteRT and Keras, token for token


def export(run_dir: Path | None = None, model_base: Path = MODEL_BASE, quiet: bool = False,
           check_images: int = LITE_CHECK_IMAGES) -> dict:
    """Publishes a run as the next version under `model_base/captioning/`: the SavedModel, and
    in assets.extra/ the .tflite variants, vocab.txt and litert.json, each .tflite checked in the
    LiteRT interpreter against the Keras greedy decode of held-out images."""
    from serving.litert_captioning import CaptionLiteRT

    run = find_run(run_dir)
    captioner = load_captioner(run.path)
    if is_photo_run(run):
        return export_photos(run, captioner, model_base, quiet, check_images)
    test = held_out_data(run).test
    images = caption_data.image_array(test.images[:check_images], captioner.image_size)
    keras_greedy = [[int(t) for t in ids]
                    for ids in captioner.best_ids(images, beam_width=1, alpha=0.0)]

    def check(path: Path) -> dict:
        lite = CaptionLiteRT(path)
        same = [lite.greedy_ids(image)[0] == ids for image, ids in zip(images, keras_greedy)]
        return {"same_tokens_as_keras_greedy": float(np.mean(same))}

    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(captioner),
        assets={
            "vocab.txt": run.file("vocab.txt"),
            # What `serving.litert_captioning` needs to run the .tflite files without TensorFlow.
            "litert.json": {
                "kind": "captioning", "signatures": list(TFLITE_SIGNATURES),
                "image_size": captioner.image_size, "max_length": captioner.max_length,
                "ids": {"pad": text_pairs.PAD, "unk": text_pairs.UNK,
                        "start": text_pairs.START, "end": text_pairs.END},
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


def export_photos(run: runner.RunDir, captioner: Captioner, model_base: Path, quiet: bool,
                  check_images: int) -> dict:
    """A photo run as the next version: the SavedModel (photo bytes of any size in, the beam
    search chosen on validation in the graph) and, for LiteRT, a full-integer int8 encoder
    calibrated on training photos beside the decoder's `encode` / `decode_step` in float32 and
    dynamic; each decoder file is checked with the int8 encoder against Keras' greedy captions."""
    from serving.litert_captioning import CaptionLiteRT

    data = held_out_data(run)
    beam_width, alpha = decoding_of(run, None, None)
    size = captioner.image_size
    images = caption_data.image_array(data.test.images[:check_images], size)
    keras_greedy = [[int(t) for t in ids]
                    for ids in captioner.best_ids(images, beam_width=1, alpha=0.0)]
    calibration = caption_data.image_array(data.train.images[:PHOTO_CALIBRATION], size)
    with tempfile.TemporaryDirectory() as folder:
        photo.lite_encoder_archive(captioner.model).write_out(folder, verbose=False)
        encoder = export_lib.convert_to_tflite(
            Path(folder), "encode_image", "int8",
            [image[None].astype(np.float32) for image in calibration])

    def check(path: Path) -> dict:
        lite = CaptionLiteRT(path)
        same = [lite.greedy_ids(image)[0] == ids for image, ids in zip(images, keras_greedy)]
        return {"same_tokens_as_keras_greedy": float(np.mean(same))}

    report = export_lib.write_version(
        Path(model_base) / APP, serving_archive(captioner, beam_width, alpha),
        assets={
            "vocab.txt": run.path / "vocab.txt",
            PHOTO_LITE["encoder"]: encoder,
            "litert.json": {
                "kind": "captioning", "signatures": list(PHOTO_LITE["signatures"]),
                "encoder": PHOTO_LITE["encoder"], "image_size": size,
                "max_length": captioner.max_length, "vocab": "vocab.txt",
                "beam_width": beam_width, "alpha": alpha,
                "ids": {"pad": text_pairs.PAD, "unk": text_pairs.UNK,
                        "start": text_pairs.START, "end": text_pairs.END}},
        },
        tflite=export_lib.TFLiteFiles(PHOTO_LITE["decoder"], PHOTO_LITE["signatures"],
                                      variants=PHOTO_LITE["variants"], check=check,
                                      archive=photo.lite_decoder_archive(captioner.model)),
        report={"run": str(Path(run.path).resolve()), "checked_images": len(images),
                "encoder_int8_bytes": len(encoder), "beam_width": beam_width, "alpha": alpha},
        progress=not quiet)
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
    train_parser.add_argument("--encoder-alpha", type=float, default=None, metavar="ALPHA",
                              help=f"{PHOTO_ENCODER}'s width (default: read from the weights"
                                   " file, which must match it)")
    train_parser.add_argument("--min-count", type=int, default=region_grids.MIN_COUNT,
                              help="photos: a word in fewer training captions is [UNK]"
                                   " (default: %(default)s)")
    train_parser.add_argument("--scenes", type=int, default=SCENES,
                              help="generated scenes (default: %(default)s)")
    train_parser.add_argument("--objects", type=int, choices=(1, 2, 3),
                              help="objects per generated scene (default: 1 to 3)")
    def scenes_and_photos(name):
        return f"default: {SCENE[name]}, photos {PHOTO[name]}"

    train_parser.add_argument("--image-size", type=int,
                              help="images are resized to this square"
                                   f" ({scenes_and_photos('image_size')})")
    train_parser.add_argument("--units", type=int, help=scenes_and_photos("units"))
    train_parser.add_argument("--learning-rate", type=float,
                              help="peak Adam learning rate for one replica's batch; N"
                                   " replicas train at N times it"
                                   f" ({scenes_and_photos('learning_rate')})")
    train_parser.add_argument("--members", type=int, default=1, metavar="N",
                              help=f"photos (--encoder {PHOTO_ENCODER}): train N attention LSTMs"
                                   " on the same cached grids with seeds seed..seed+N-1 and"
                                   " caption with their mean word probabilities (an ensemble;"
                                   " N times the training) (default: %(default)s)")
    train_parser.add_argument("--fine-tune-encoder", action="store_true",
                              help="photos: once the decoder has converged, train"
                                   " MobileNetV2's top blocks (block_16, Conv_1) with it, over"
                                   " a cache of the layer below them; kept only if validation"
                                   " BLEU-4 improves")
    train_parser.add_argument("--fine-tune-epochs", type=int, default=photo.FINE_TUNE_EPOCHS,
                              metavar="N", help="epochs of it (default: %(default)s)")
    train_parser.add_argument("--self-critical-epochs", type=int, default=0, metavar="N",
                              help="photos: then N epochs of self-critical training on the"
                                   " captions' CIDEr-D (default: %(default)s)")
    train_parser.add_argument("--self-critical-learning-rate", type=float,
                              default=critic.LEARNING_RATE, metavar="RATE",
                              help="Adam's rate for them (default: %(default)s)")
    train_parser.add_argument("--self-critical-reward", choices=critic.REWARDS,
                              default=critic.REWARD,
                              help="what a sampled caption earns (default: %(default)s)")
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
