"""Captioning on the generated shape scenes at full size: held-out BLEU-1..4 (sacreBLEU, every
reference) of the attention captioner and of show-and-tell, training CPU time, and the Flickr8k
loader on a fixture with the real file layout. With --flickr8k: real photos.

    python -m bench.captioning                   # full size: 6,000 scenes, 8 epochs, both decoders
    python -m bench.captioning --decoders attention --epochs 4
    python -m bench.captioning --flickr8k ../shared/data/flickr8k \
        --weights ../shared/data/imagenet-weights/mobilenet_v2_{1.0,0.35}_224_no_top.weights.h5
    python -m bench.captioning --flickr8k ... --weights ... --decoders transformer --epochs 8
    python -m bench.captioning --flickr8k ... --weights ... --members 3 --epochs 7 \
        --fine-tune-encoder --fine-tune-epochs 2 \
        --self-critical-epochs 1    # an ensemble, MobileNetV2's top trained, the last member
                                    # self-critical

Flickr8k: for each MobileNetV2 weights file, `train --encoder mobilenet_v2` (grids cached,
best epoch by validation BLEU-4, beam and length penalty chosen on validation), BLEU-1..4 on the
1,000 standard test photos beside the most frequent training caption and an untrained copy (with
`--decoders`: each photo decoder, attention or transformer, on the same encoder), the
wall and CPU time of training (caching included: CPU time from getrusage, the machine is
shared), then the export and LiteRT: the int8 encoder with each decoder file captions the test
photos greedily, beside Keras' greedy and beam captions; the `.tflite` sizes. Target: BLEU-4 >=
21.3 (Xu et al.'s hard attention, VGG) with at most 60 CPU-minutes of training.

The held-out images show combinations of objects never seen in training
(`pipelines.shape_scenes`). Target: BLEU-4 >= 80 (0-100 scale) for the attention captioner.
The Flickr8k loader is also timed on a fixture built here with the real layout
(Flickr8k.token.txt, Flicker8k_Dataset/, the three split files).
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from apps import captioning, captioning_photos, runner
from bench import save_results

BLEU4_TARGET = 80.0
FIXTURE_IMAGES = 300
PHOTO_BLEU4_TARGET = 21.3  # Xu et al. (2015), hard attention, Flickr8k test
PHOTO_CPU_MINUTES = 60
README_PICTURE = Path("docs/captioning_flickr8k.png")


def train_one(decoder: str, scenes: int, epochs: int, workdir: Path) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    config = captioning.TrainConfig(scenes=scenes, epochs=epochs, decoder=decoder,
                                    run_dir=workdir / decoder, verbose=2)
    metrics = captioning.train(config)
    return {"decoder": decoder, **{f"BLEU-{n}": round(metrics[f"bleu{n}"], 1) for n in range(1, 5)},
            "most frequent caption BLEU-4": round(metrics["most_frequent_bleu4"], 1),
            "exact": f"{metrics['exact_match']:.1%}", "held-out images": metrics["test_images"],
            "train + evaluate s (wall)": round(time.perf_counter() - wall, 1),
            "CPU s (train + evaluate)": round(time.process_time() - cpu, 1)}


def flickr_loader(workdir: Path, count: int = FIXTURE_IMAGES) -> dict:
    from PIL import Image

    from pipelines import captions as caption_data

    folder = workdir / "Flickr8k"
    names = [f"{1000000 + i}_{i:x}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        (folder / "Flicker8k_Dataset").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (500, 375), (i % 255, 80, 160)).save(folder / "Flicker8k_Dataset" / name)
    (folder / caption_data.TOKEN_FILE).write_text("".join(
        f"{n}#{k}\tA dog runs through the grass number {k} .\n" for n in names for k in range(5)))
    cut = (int(0.8 * count), int(0.9 * count))
    for split, part in zip(caption_data.FLICKR_SPLIT_FILES.values(),
                                     (names[: cut[0]], names[cut[0] : cut[1]], names[cut[1] :])):
        (folder / split).write_text("\n".join(part) + "\n")
    started = time.perf_counter()
    data = caption_data.load(str(folder))
    checked = time.perf_counter() - started
    images = caption_data.image_array(data.train.images, captioning.IMAGE_SIZE)
    return {"images": count, "captions": 5 * count,
            "splits": f"{len(data.train)}/{len(data.validation)}/{len(data.test)}",
            "load + check s": round(checked, 2),
            "decode + resize images/s": round(len(images) / (time.perf_counter() - started
                                                             - checked), 1)}


def cpu_seconds() -> float:
    """User + system time of this process and its threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train_photos(data: str, weights: str, run_dir: Path, **options) -> dict:
    """One `train --encoder mobilenet_v2` run: its test figures, wall and CPU time. A
    `region_grids` folder already in `run_dir` (a link to another run's, say) is used as it is
    when its key matches: same backbone, weights and photos."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    config = captioning.TrainConfig(data=data, backbone="mobilenet_v2", backbone_weights=weights,
                                    run_dir=run_dir, verbose=2, evaluate_after=False,
                                    mark_last=False, **options)
    metrics = captioning.train(config)
    trained = {"train wall min": round((time.perf_counter() - wall) / 60, 1),
               "train CPU min": round((cpu_seconds() - cpu) / 60, 1)}
    cpu = cpu_seconds()
    figures = captioning.evaluate(run_dir)
    return {"decoder": config.decoder, "alpha": config.encoder_alpha, "epochs": config.epochs,
            "members": config.members,
            "fine-tune epochs": config.fine_tune_epochs if config.fine_tune_encoder else 0,
            "fine-tune start / best val BLEU-4": (
                f"{metrics['fine_tune_start_val_bleu4']:.2f} /"
                f" {metrics['fine_tuned_val_bleu4']:.2f}"
                if "fine_tune_start_val_bleu4" in metrics else None),
            "self-critical epochs": config.self_critical_epochs,
            **{f"BLEU-{n}": round(figures[f"bleu{n}"], 1) for n in range(1, 5)},
            "CIDEr-D": round(100 * figures["cider_d"], 1),
            "most frequent BLEU-1/4": f"{figures['most_frequent_bleu1']:.1f} /"
                                      f" {figures['most_frequent_bleu4']:.1f}",
            "untrained BLEU-1/4": f"{figures['untrained_bleu1']:.1f} /"
                                  f" {figures['untrained_bleu4']:.1f}",
            "beam, length penalty": f"{metrics['beam_width']}, {metrics['alpha']:g}",
            "best val BLEU-4": round(metrics["best_val_bleu4"], 1), **trained,
            "evaluate CPU min": round((cpu_seconds() - cpu) / 60, 1)}


def photo_lite(run_dir: Path, models: Path, picture: Path | None = None) -> dict:
    """Export, then the 1,000 test photos through LiteRT (int8 encoder + each decoder file,
    greedy) beside Keras greedy and beam; the .tflite sizes; the README picture."""
    from models import photo_training
    from models.captioner import attention_sheet
    from pipelines import captions as caption_data
    from serving.litert_captioning import CaptionLiteRT

    report = captioning.export(run_dir, models, quiet=True)
    extra = Path(report["saved_model"]) / "assets.extra"
    captioner = captioning.load_captioner(run_dir)
    test = captioning.held_out_data(runner.RunDir(run_dir)).test
    references = photo_training.plain_references(test.references)
    images = caption_data.image_array(test.images, captioner.image_size)
    beam, alpha = captioning.decoding_of(runner.RunDir(run_dir), None, None)
    row = {"Keras greedy": captioning.bleu_scores(captioner.captions(images, 1, 0.0),
                                                  references)["bleu4"],
           f"Keras beam {beam}": captioning.bleu_scores(captioner.captions(images, beam, alpha),
                                                      references)["bleu4"]}
    for variant in captioning_photos.LITE["variants"]:
        lite = CaptionLiteRT(extra / f"{captioning_photos.LITE['decoder']}_{variant}.tflite")
        for width, penalty in {(1, 0.0), (beam, alpha)}:
            started = time.perf_counter()
            texts = [lite.caption(photo, width, penalty) for photo in images]
            name = f"LiteRT int8 + {variant}, " + ("greedy" if width == 1 else f"beam {width}")
            row[name] = captioning.bleu_scores(texts, references)["bleu4"]
            row[f"{name} ms/photo"] = 1000 * (time.perf_counter() - started) / len(images)
    sizes = {path.name: path.stat().st_size for path in sorted(extra.glob("*.tflite"))}
    if picture is not None:
        picture.parent.mkdir(parents=True, exist_ok=True)
        attention_sheet(captioner, images[:: max(1, len(images) // 4)][:4], picture, words=5,
                        beam_width=beam, alpha=alpha)
    return {"test BLEU-4": {k: round(v, 2) for k, v in row.items()}, "tflite bytes": sizes,
            "export checks": {v: report[v] for v in captioning_photos.LITE["variants"]}}


def flickr8k(args) -> dict:
    """Each weights file under each photo decoder (--decoders; default the attention LSTM): the
    LSTM's runs in <workdir>/<weights name>, the Transformer's in <...>-transformer."""
    workdir = Path(args.workdir)
    rows, lite = [], {}
    decoders = args.decoders or ["attention"]
    unknown = [d for d in decoders if d not in captioning.PHOTO_DECODERS]
    if unknown:
        raise runner.UsageError(f"--decoders {' '.join(unknown)}: photos are captioned by"
                                f" {', '.join(captioning.PHOTO_DECODERS)}")
    for weights in args.weights:
        for decoder in decoders:
            name = Path(weights).name.split("_224")[0]
            name += "" if decoder == "attention" else f"-{decoder}"
            name += f"-x{args.members}" if args.members > 1 and decoder == "attention" else ""
            name += "-fine-tuned" if args.fine_tune_encoder else ""
            name += f"-sc{args.self_critical_epochs}" if args.self_critical_epochs else ""
            name += f"-seed{args.seed}" if args.seed != captioning.SEED else ""
            run_dir = workdir / name
            if "train" in args.stages:
                options = {"decoder": decoder, "seed": args.seed,
                           "self_critical_epochs": args.self_critical_epochs,
                           "members": args.members if decoder == "attention" else 1,
                           "fine_tune_encoder": args.fine_tune_encoder,
                           **({"fine_tune_epochs": args.fine_tune_epochs}
                              if args.fine_tune_epochs else {}),
                           **({"epochs": args.epochs} if args.epochs else {})}
                rows.append(train_photos(args.flickr8k, weights, run_dir, **options))
                print(json.dumps(rows[-1]), flush=True)
            if "lite" in args.stages:
                first = weights == args.weights[0]
                picture = (README_PICTURE if decoder == "attention" else README_PICTURE.with_name(
                    f"{README_PICTURE.stem}_{decoder}.png")) if first else None
                lite[name] = photo_lite(run_dir, workdir / f"models-{name}", picture)
                print(json.dumps(lite[name]), flush=True)
    if rows:
        print(f"\nFlickr8k, 1,000 test photos; target BLEU-4 >= {PHOTO_BLEU4_TARGET} with at"
              f" most {PHOTO_CPU_MINUTES} CPU-minutes of training")
        runner.print_table(rows)
    results = {"flickr8k": rows, "litert": lite, "bleu4_target": PHOTO_BLEU4_TARGET,
               "decoders": decoders}
    save_results("captioning_flickr8k" if decoders == ["attention"]
                 else f"captioning_flickr8k_{'_'.join(decoders)}", results)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.captioning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=captioning.SCENES)
    parser.add_argument("--epochs", type=int,
                        help=f"default: {captioning.SCENE['epochs']},"
                             f" photos {captioning_photos.DEFAULTS['epochs']}")
    parser.add_argument("--decoders", nargs="+", choices=captioning.TRAIN_DECODERS,
                        default=None,
                        help="scenes: attention and show-and-tell (default: both); --flickr8k:"
                             " attention and/or transformer (default: attention)")
    parser.add_argument("--flickr8k", metavar="DIR", help="real photos instead of the scenes")
    parser.add_argument("--weights", nargs="+", default=[], metavar="FILE",
                        help="MobileNetV2 no-top .weights.h5 files, one run each")
    parser.add_argument("--workdir", default="runs/bench/captioning",
                        help="Flickr8k runs and exports (default: %(default)s)")
    parser.add_argument("--self-critical-epochs", type=int, default=0, metavar="N",
                        help="photos: self-critical epochs after cross-entropy (default:"
                             " %(default)s)")
    parser.add_argument("--members", type=int, default=1, metavar="N",
                        help="photos: an ensemble of N attention LSTMs (default: %(default)s)")
    parser.add_argument("--fine-tune-encoder", action="store_true",
                        help="photos: then MobileNetV2's top blocks train too")
    parser.add_argument("--fine-tune-epochs", type=int, metavar="N",
                        help="epochs of it (default: apps.captioning's)")
    parser.add_argument("--seed", type=int, default=captioning.SEED,
                        help="photos: the runs' seed (default: %(default)s)")
    parser.add_argument("--stages", nargs="+", choices=("train", "lite"),
                        default=["train", "lite"])
    args = parser.parse_args(argv)
    if args.flickr8k:
        return flickr8k(args)
    args.epochs = args.epochs or captioning.SCENE["epochs"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train_one(d, args.scenes, args.epochs, Path(tmp))
                for d in args.decoders or captioning.DECODERS]
        loader = flickr_loader(Path(tmp))
    print(f"\nShape scenes ({args.scenes} generated, {args.epochs} epochs, beam"
          f" {captioning.BEAM_WIDTH}); target BLEU-4 >= {BLEU4_TARGET:.0f} on held-out"
          " combinations")
    runner.print_table(rows)
    print("\nFlickr8k loader on a fixture with the real layout")
    runner.print_table([loader])
    results = {"config": vars(args), "scenes": rows, "flickr8k_loader": loader,
               "bleu4_target": BLEU4_TARGET}
    save_results("captioning", results)
    return results


if __name__ == "__main__":
    main()
