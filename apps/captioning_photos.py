"""Training a photo captioner: what `python -m apps.captioning train --encoder mobilenet_v2` does
that the generated scenes do not. `apps.captioning` opens the run and loads the photos; then, in
that run directory:

1. each photo's 7x7 grid from the frozen, ImageNet-pretrained MobileNetV2 is computed once and
   cached on disk in float16 (`pipelines.region_grids`); with `--fine-tune-encoder`, also the
   layer below the top blocks that fine-tuning trains;
2. the decoder (`models.photo_captioner`) trains on the cached grids, its best epoch chosen by
   validation BLEU-4 (`models.photo_training.ValidationBLEU`); with `--members N`, N attention
   LSTMs train in turn and are joined into one ensemble;
3. then, if asked, MobileNetV2's top blocks train with the decoder (`fine_tune_phase`) or
   self-critical epochs train on sampled captions' CIDEr-D (`self_critical_phase`), each kept
   only where validation BLEU-4 improves on the model it started from; in an ensemble, the
   first member fine-tunes the top and the last one trains the self-critical epochs, judged by
   the ensemble's BLEU-4 (`self_critical_member`);
4. the beam width and length penalty are chosen on validation (`decoding.json`), and the test
   figures computed with them (`models.photo_training.evaluate_photos`).

`export` publishes a photo run: a SavedModel that reads photo bytes and runs the chosen beam
search in its graph, and for LiteRT a full-integer int8 encoder beside the decoder's steps.

A `config` here is `apps.captioning.TrainConfig`, typed by its base class: the app imports this
module, never the other way round.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import runner
from apps.runner import TrainingConfig, UsageError
from models import photo_captioner as photo
from models import photo_training
from models import self_critical as critic
from models.captioner import Captioner, serving_archive
from models.sequence_training import compile_teacher_forced
from pipelines import captions as caption_data
from pipelines import region_grids, text_pairs
from serving import export as export_lib

# The photo recipe: what the options left unset default to; a batch is 32 photos, each with all
# of its (5) captions.
DEFAULTS = {"epochs": 10, "batch_size": 32, "learning_rate": 1e-3, "units": 512,
            "embedding_dim": 256, "image_size": 224}
# LiteRT: an int8 encoder calibrated on CALIBRATION_PHOTOS training photos, and the decoder.
CALIBRATION_PHOTOS = 100
EXAMPLES = 8  # test photos with their captions in evaluation.json
LITE = {"encoder": "captioning_encoder_int8.tflite", "decoder": "captioning_decoder",
        "variants": ("float32", "dynamic"), "signatures": ("encode", "decode_step")}


# ---------------------------------------------------------------------------------------------
# The options only photos have
# ---------------------------------------------------------------------------------------------


def encoder_alpha(weights: str | None, alpha: float | None) -> float:
    """MobileNetV2's width: --encoder-alpha, checked against the weights file's (which it is
    read from when not given); 1.0 for the downloaded `imagenet` weights."""
    if not weights:
        raise UsageError(f"--encoder {photo.BACKBONE} needs --encoder-weights: a local"
                         " .weights.h5 file, or imagenet (downloads)")
    if weights == "imagenet":
        return alpha or 1.0
    return photo.check_backbone_weights(weights, alpha)


def add_train_options(parser) -> None:
    """`train`'s options for photo runs (`--encoder mobilenet_v2`) beyond the scenes' own."""
    parser.add_argument("--encoder-alpha", type=float, default=None, metavar="ALPHA",
                        help=f"{photo.BACKBONE}'s width (default: read from the weights"
                             " file, which must match it)")
    parser.add_argument("--min-count", type=int, default=region_grids.MIN_COUNT,
                        help="photos: a word in fewer training captions is [UNK]"
                             " (default: %(default)s)")
    parser.add_argument("--members", type=int, default=1, metavar="N",
                        help=f"photos (--encoder {photo.BACKBONE}): train N attention LSTMs"
                             " on the same cached grids with seeds seed..seed+N-1 and"
                             " caption with their mean word probabilities (an ensemble;"
                             " N times the training) (default: %(default)s)")
    parser.add_argument("--fine-tune-encoder", action="store_true",
                        help="photos: once the decoder has converged, train"
                             " MobileNetV2's top blocks (block_16, Conv_1) with it, over"
                             " a cache of the layer below them; kept only if validation"
                             " BLEU-4 improves")
    parser.add_argument("--fine-tune-epochs", type=int, default=photo.FINE_TUNE_EPOCHS,
                        metavar="N", help="epochs of it (default: %(default)s)")
    parser.add_argument("--self-critical-epochs", type=int, default=0, metavar="N",
                        help="photos: then N epochs of self-critical training on the"
                             " captions' CIDEr-D; with --members, of the last member, judged"
                             " by the ensemble's validation BLEU-4 (default: %(default)s)")
    parser.add_argument("--self-critical-learning-rate", type=float,
                        default=critic.LEARNING_RATE, metavar="RATE",
                        help="Adam's rate for them (default: %(default)s)")
    parser.add_argument("--self-critical-reward", choices=critic.REWARDS,
                        default=critic.REWARD,
                        help="what a sampled caption earns (default: %(default)s)")


# ---------------------------------------------------------------------------------------------
# The photos' text and grids
# ---------------------------------------------------------------------------------------------


def photo_texts(dataset: caption_data.CaptionData, min_count: int
                ) -> region_grids.PhotoCaptions:
    return region_grids.photo_captions({"train": dataset.train.references,
                                        "validation": dataset.validation.references}, min_count)


def photo_settings(config: TrainingConfig, text: region_grids.PhotoCaptions) -> dict:
    """What `photo.build_photo_models` builds, as run.json keeps it (the untrained copy and
    every later load are built from it)."""
    settings = {"alpha": config.encoder_alpha, "captions_per_photo": text.per_photo,
                "caption_length": text.length + 1, "image_size": config.image_size}
    if config.decoder == "transformer":  # photo_captioner's sizes
        return {**settings, "decoder": "transformer", "layers": photo.TRANSFORMER_LAYERS,
                "heads": photo.TRANSFORMER_HEADS, "memory_dim": photo.D_MODEL,
                "ff": photo.TRANSFORMER_FF, "dropout": photo.TRANSFORMER_DROPOUT}
    return {**settings, "embedding_dim": config.embedding_dim, "units": config.units,
            "members": config.members}


def photo_grid_cache(run_dir: Path, photo_model: keras.Model, config: TrainingConfig,
                     cut: bool = False) -> region_grids.RegionCache:
    """The run's grid cache, keyed by what makes a grid: encoder, alpha, weights, size; with
    `cut`, the cache of MobileNetV2's output below the blocks --fine-tune-encoder trains."""
    weights = config.backbone_weights
    key = {"backbone": photo.BACKBONE, "alpha": config.encoder_alpha,
           "weights": weights if weights == "imagenet" else region_grids.file_digest(weights)}
    if cut:
        return region_grids.RegionCache(
            run_dir / "cut_grids", tf.function(photo.cut_grid_fn(photo_model)),
            {**key, "cut": photo.FINE_TUNE_CUT}, config.image_size)
    return region_grids.RegionCache(
        run_dir / "region_grids", tf.function(photo_model.get_layer("encoder").grid), key,
        config.image_size)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def train(run: runner.TrainingRun, config: TrainingConfig, dataset: caption_data.CaptionData
          ) -> dict:
    """Trains in `run` (opened, not started): the grids cached, the decoder's cross-entropy
    epochs (or `--members`), then `--self-critical-epochs` or `--fine-tune-encoder`, then the
    decoding chosen on validation, and the test figures unless `config.evaluate_after` is off.
    Returns them all; the caller finishes the run."""
    text = photo_texts(dataset, config.min_count)
    settings = photo_settings(config, text)
    with run.strategy.scope():
        photo_model, grid_model = photo.build_photo_models(text.tokenizer.size, **settings,
                                                           weights=config.backbone_weights)
    photos = {"train": dataset.train.images, "validation": dataset.validation.images}
    cache = photo_grid_cache(run.path, photo_model, config)
    grids = region_grids.cached_grids(cache, photos, run.path)
    cut_grids = (region_grids.cached_grids(photo_grid_cache(run.path, photo_model, config,
                                                            cut=True), photos, run.path)
                 if config.fine_tune_encoder else None)

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
    else:
        metrics = cross_entropy_phase(
            photo_model, grid_model, run.path, run.resumed is not None, config, text, grids,
            learning_rate, run.global_batch, config.seed,
            photo.LABEL_SMOOTHING if config.decoder == "transformer" else 0.0)
        if config.self_critical_epochs:
            metrics.update(self_critical_phase(run.path, config, text, grids, photo_model,
                                               grid_model, run.strategy))
        if config.fine_tune_encoder:
            metrics.update(fine_tune_phase(run.path, config, text, cut_grids, photo_model,
                                           run.strategy))
    return {**metrics, "train_images": len(dataset.train),
            **choose_and_evaluate(run.path, config, dataset, text, grids["validation"],
                                  cut_grids)}


def train_members(run: runner.TrainingRun, config: TrainingConfig,
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
                resumed = runner.start_run(folder) is not None
                print(f"member {k + 1} of {config.members}", flush=True)
                figures = cross_entropy_phase(member, grid_model, folder, resumed, config, text,
                                              grids, learning_rate, run.global_batch,
                                              config.seed + 1000 * k)
                runner.write_json(trained, {"val_bleu4": figures["best_val_bleu4"]})
            best = json.loads(trained.read_text())["val_bleu4"]
            if k == 0 and cut_grids is not None:
                best = fine_tune_phase(folder, config, text, cut_grids, member,
                                       run.strategy)["best_val_bleu4"]
            runner.write_json(done, {"val_bleu4": best})
        scores.append(json.loads(done.read_text())["val_bleu4"])
        members.append(keras.saving.load_model(folder / "best.keras", compile=False))
    photo.join_members(ensemble, members).save(run.path / "best.keras")
    if config.self_critical_epochs:
        critical = self_critical_member(run, config, text, grids, ensemble, members)
        score = critical["best_val_bleu4"]
    else:  # `grids` are the ones every member read: through the fine-tuned top, if any
        critical, score = {}, photo_training.ValidationBLEU(
            ensemble, photo.GridCaptioner(ensemble, text.tokenizer, text.length + 1),
            grids["validation"], text.references["validation"], run.path / "best.keras",
        ).score()[0]
    print(f"ensemble of {config.members}: validation BLEU-4 {score:.2f} (members "
          + ", ".join(f"{s:.2f}" for s in scores) + ")", flush=True)
    tuned = run.path / "member_0" / "fine_tune" / "start.json"
    return {"training_seconds": round(time.perf_counter() - started, 1),
            "epochs": config.epochs, "members": config.members, "member_val_bleu4": scores,
            "best_val_bleu4": score, **critical,
            **({"fine_tune_start_val_bleu4": json.loads(tuned.read_text())["val_bleu4"],
                "fine_tuned_val_bleu4": scores[0]} if cut_grids is not None else {})}


def self_critical_member(run: runner.TrainingRun, config: TrainingConfig,
                         text: region_grids.PhotoCaptions, grids: dict, ensemble: keras.Model,
                         members: list[keras.Model]) -> dict:
    """`--members N --self-critical-epochs K`: the last member trains K self-critical epochs
    on the grids the members read, each judged by the ensemble's validation BLEU-4 with that
    member in it (not by the member's own: what it should add is a policy the others do not
    have). Then the run's best.keras is joined again. A finished phase is not trained again
    (`self_critical.json`); a killed one resumes from its backup."""
    folder = run.path / f"member_{config.members - 1}"
    done = folder / "self_critical.json"
    if not done.is_file():
        with run.strategy.scope():
            member, grid_model = photo.build_photo_models(
                text.tokenizer.size, **{**run.dir.config()["photo_settings"], "members": 1})
        runner.write_json(done, self_critical_phase(
            folder, config, text, grids, member, grid_model, run.strategy,
            ensemble=(ensemble, members[:-1])))
    members[-1] = keras.saving.load_model(folder / "best.keras", compile=False)
    photo.join_members(ensemble, members).save(run.path / "best.keras")
    return json.loads(done.read_text())


def cross_entropy_phase(photo_model: keras.Model, grid_model: keras.Model, folder: Path,
                        resumed: bool, config: TrainingConfig,
                        text: region_grids.PhotoCaptions, grids: dict, learning_rate: float,
                        global_batch: int, seed: int, label_smoothing: float = 0.0) -> dict:
    """The decoder's cross-entropy epochs in `folder`, prepared by `runner.start_run` (a kill
    resumes exactly; `resumed`: from a backup there), shuffled by `seed` + epoch; the best
    epoch by validation BLEU-4 saved as `folder`/best.keras. A lone run trains in its run
    directory, a member of `--members` in its own. Returns the phase's figures."""

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(grids["train"], text.blocks["train"], global_batch,
                                         shuffle=True, seed=seed + epoch)

    steps_per_epoch = int(epoch_batches(0).cardinality())
    with grid_model.distribute_strategy.scope():
        compile_teacher_forced(grid_model, config.epochs * steps_per_epoch, learning_rate,
                               label_smoothing)
    selection = photo_training.ValidationBLEU(
        photo_model, photo.GridCaptioner(photo_model, text.tokenizer, text.length + 1),
        grids["validation"], text.references["validation"], folder / "best.keras",
        best=runner.best_so_far(folder, "val_bleu4") if resumed else None)
    started = time.perf_counter()
    steps = runner.fit(grid_model, epoch_batches, config.epochs, folder,
                       steps_per_epoch=steps_per_epoch,
                       validation_data=region_grids.grid_batches(
                           grids["validation"], text.blocks["validation"], global_batch),
                       callbacks=[selection, *runner.training_callbacks(folder, None,
                                                                        resumed=resumed)],
                       backup_every=config.backup_every, jit=config.jit, verbose=config.verbose)
    runner.plot_history(folder)
    return {"training_seconds": round(time.perf_counter() - started, 1),
            "epochs": config.epochs, "steps": steps, "best_val_bleu4": selection.best}


# ---------------------------------------------------------------------------------------------
# After cross-entropy: self-critical epochs, or the encoder's top fine-tuned
# ---------------------------------------------------------------------------------------------


def self_critical_phase(run_dir: Path, config: TrainingConfig, text: region_grids.PhotoCaptions,
                        grids: dict, photo_model: keras.Model, grid_model: keras.Model,
                        strategy, ensemble: tuple[keras.Model, list[keras.Model]] | None = None
                        ) -> dict:
    """`config.self_critical_epochs` of self-critical training (`models.self_critical`) from the
    run's best.keras, in `<run>/self_critical` (its history.csv and backup: a kill resumes
    exactly with the `self-critical` command). best.keras is replaced only by an epoch whose
    validation BLEU-4 (`photo_training.SELF_CRITICAL_SELECTION`) beats the model it started
    from, scored the same way. With `ensemble` (the joined model, the other members), the
    model trained is the ensemble's last member, and the ensemble with it is what is scored."""
    folder = Path(run_dir) / "self_critical"
    resumed = runner.start_run(folder)
    with strategy.scope():
        photo_model.load_weights(Path(run_dir) / "best.keras")
    judged, joining = photo_model, []
    if ensemble is not None:
        judged, others = ensemble
        photo.join_members(judged, [*others, photo_model])
        joining = [keras.callbacks.LambdaCallback(  # before `selection` scores the epoch
            on_epoch_end=lambda epoch, logs: photo.join_members(judged, [*others, photo_model]))]
    with strategy.scope():
        trainer = critic.self_critical_trainer(
            grid_model, photo_model, text.blocks["train"],
            runner.scaled_learning_rate(config.self_critical_learning_rate, strategy),
            config.seed, config.self_critical_reward)
    global_batch = config.batch_size * strategy.num_replicas_in_sync

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        return region_grids.grid_batches(grids["train"], text.blocks["train"], global_batch,
                                         shuffle=True, seed=config.seed + 1000 + epoch)

    selection = photo_training.ValidationBLEU(
        photo_model, photo.GridCaptioner(judged, text.tokenizer, text.length + 1),
        grids["validation"], text.references["validation"], Path(run_dir) / "best.keras",
        decodings=photo_training.SELF_CRITICAL_SELECTION)
    starting = starting_score(folder, selection, resumed)
    started = time.perf_counter()
    runner.fit(trainer, epoch_batches, config.self_critical_epochs, folder,
               steps_per_epoch=int(epoch_batches(0).cardinality()),
               callbacks=[*joining, selection,
                          keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True)],
               backup_every=config.backup_every, verbose=config.verbose)
    return {"self_critical_epochs": config.self_critical_epochs,
            "self_critical_seconds": round(time.perf_counter() - started, 1),
            "self_critical_start_val_bleu4": starting, "best_val_bleu4": selection.best}


def fine_tune_phase(run_dir: Path, config: TrainingConfig, text: region_grids.PhotoCaptions,
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
        compile_teacher_forced(
            trainer, config.fine_tune_epochs * steps_per_epoch,
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


def self_critical(run_dir: Path, config: TrainingConfig, dataset: caption_data.CaptionData
                  ) -> dict:
    """The `self-critical` command on a trained photo run, in place: `self_critical_phase` (a
    killed one resumes from its backup), then the decoding chosen again and the test figures.
    Returns the run's metrics updated."""
    strategy = runner.choose_strategy(config.strategy)
    text = photo_texts(dataset, config.min_count)
    with strategy.scope():
        photo_model, grid_model = photo.build_photo_models(
            text.tokenizer.size, **runner.RunDir(run_dir).config()["photo_settings"])
    grids = region_grids.cached_grids(photo_grid_cache(run_dir, photo_model, config),
                                      {"train": dataset.train.images,
                                       "validation": dataset.validation.images}, run_dir)
    earlier = Path(run_dir) / "metrics.json"
    metrics = {**(json.loads(earlier.read_text()) if earlier.is_file() else {}),
               **self_critical_phase(run_dir, config, text, grids, photo_model, grid_model,
                                     strategy),
               **choose_and_evaluate(run_dir, config, dataset, text, grids["validation"])}
    return metrics


# ---------------------------------------------------------------------------------------------
# The decoding chosen on validation, the test figures
# ---------------------------------------------------------------------------------------------


def choose_and_evaluate(run_dir: Path, config: TrainingConfig, dataset: caption_data.CaptionData,
                        text: region_grids.PhotoCaptions, validation_grids,
                        cut_grids: dict | None = None) -> dict:
    """The run's best.keras: the beam width and length penalty chosen on validation (kept in
    decoding.json), then, unless `evaluate_after` is off, the test figures, printed. With
    `cut_grids` (a fine-tuned encoder) the validation grids are recomputed through the model's
    own top."""
    run = runner.RunDir(run_dir)
    best = Captioner.load(run.file("best.keras"), run.file("vocab.txt"),
                          run.config()["max_length"])
    if cut_grids is not None:
        validation_grids = photo.top_grids(best.model, cut_grids["validation"])
    decoding = photo_training.choose_decoding(
        photo.GridCaptioner(best.model, text.tokenizer, text.length + 1), validation_grids,
        text.references["validation"])
    runner.write_json(run.path / "decoding.json", decoding)
    if not config.evaluate_after:
        return decoding
    metrics = {**decoding, **held_out_metrics(best, dataset, run.path, decoding["beam_width"],
                                              decoding["alpha"])}
    print(f"captioning ({photo.BACKBONE} {config.encoder_alpha}, {config.decoder}) on"
          f" {dataset.name}: test BLEU-1..4 "
          + " / ".join(f"{metrics[f'bleu{n}']:.1f}" for n in range(1, 5))
          + f", CIDEr-D {100 * metrics['cider_d']:.1f} ({metrics['test_images']} photos),"
          f" run directory {run.path}")
    return metrics


def held_out_metrics(captioner: Captioner, dataset: caption_data.CaptionData, run_dir: Path,
                     beam_width: int, alpha: float) -> dict:
    """`photo_training.evaluate_photos` on the test photos, with the run's settings."""
    settings = runner.RunDir(run_dir).config()["photo_settings"]
    return photo_training.evaluate_photos(captioner, dataset, Path(run_dir), beam_width, alpha,
                                          settings, EXAMPLES)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export(run: runner.RunDir, captioner: Captioner, app_base: Path,
           train: caption_data.Split, decoding: tuple[int, float], check, checked_images: int,
           quiet: bool) -> dict:
    """A photo run as the next version under `app_base`: the SavedModel (photo bytes of any
    size in, the beam search chosen on validation in the graph) and, for LiteRT, a
    full-integer int8 encoder calibrated on training photos beside the decoder's `encode` /
    `decode_step` in float32 and dynamic; `check` runs each decoder file with that encoder."""
    beam_width, alpha = decoding
    size = captioner.image_size
    calibration = caption_data.image_array(train.images[:CALIBRATION_PHOTOS], size)
    with tempfile.TemporaryDirectory() as folder:
        photo.lite_encoder_archive(captioner.model).write_out(folder, verbose=False)
        encoder = export_lib.convert_to_tflite(
            Path(folder), "encode_image", "int8",
            [image[None].astype(np.float32) for image in calibration])
    report = export_lib.write_version(
        app_base, serving_archive(captioner, beam_width, alpha),
        assets={
            "vocab.txt": run.path / "vocab.txt",
            LITE["encoder"]: encoder,
            "litert.json": {
                "kind": "captioning", "signatures": list(LITE["signatures"]),
                "encoder": LITE["encoder"], "image_size": size,
                "max_length": captioner.max_length, "vocab": "vocab.txt",
                "beam_width": beam_width, "alpha": alpha,
                "ids": text_pairs.SPECIAL_IDS},
        },
        tflite=export_lib.TFLiteFiles(LITE["decoder"], LITE["signatures"],
                                      variants=LITE["variants"], check=check,
                                      archive=photo.lite_decoder_archive(captioner.model)),
        report={"run": str(Path(run.path).resolve()), "checked_images": checked_images,
                "encoder_int8_bytes": len(encoder), "beam_width": beam_width, "alpha": alpha},
        progress=not quiet)
    if not quiet:
        runner.print_export(report)
    return report
