"""Captioning on the generated shape scenes at full size: held-out BLEU-1..4 (sacreBLEU, every
reference) of the attention captioner and of show-and-tell, training CPU time, and the Flickr8k
loader on a fixture with the real file layout.

    python -m bench.captioning                   # full size: 6,000 scenes, 8 epochs, both decoders
    python -m bench.captioning --decoders attention --epochs 4

The held-out images show combinations of objects never seen in training
(`pipelines.shape_scenes`). Target: BLEU-4 >= 80 (0-100 scale) for the attention captioner.
There is no Flickr8k in ../shared/data: the loader is timed on a fixture built here with the real
layout (Flickr8k.token.txt, Flicker8k_Dataset/, the three split files).
"""

import argparse
import tempfile
import time
from pathlib import Path

from apps import captioning, runner
from bench import save_results

BLEU4_TARGET = 80.0
FIXTURE_IMAGES = 300


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.captioning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=captioning.SCENES)
    parser.add_argument("--epochs", type=int, default=captioning.EPOCHS)
    parser.add_argument("--decoders", nargs="+", choices=captioning.DECODERS,
                        default=list(captioning.DECODERS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [train_one(d, args.scenes, args.epochs, Path(tmp)) for d in args.decoders]
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
