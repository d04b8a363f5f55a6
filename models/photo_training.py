"""What training and judging the photo captioner needs beyond `runner.fit`: the best epoch by
validation BLEU-4 (not by loss), the beam width and length penalty chosen on validation, the
test figures beside two baselines, and the sheet of photos with their attention maps.

Captions are scored as coco-caption scores them (the protocol of Xu et al.'s figures):
lower-cased, punctuation removed, in the references and in what the model writes (it never
learns to write the period that ends most Flickr8k captions; `region_grids.plain`). BLEU is
sacreBLEU's corpus score against every reference (`pipelines.captions.bleu_scores`); CIDEr-D
is coco-caption's (`models.self_critical.corpus_cider_d`, equal to its scorer).
"""

import json
from pathlib import Path

import keras
import numpy as np

from models.captioner import attention_sheet
from models.photo_captioner import (
    GridCaptioner,
    build_photo_models,
    photo_grids,
)
from models.self_critical import corpus_cider_d
from pipelines import captions as caption_data
from pipelines.captions import bleu_scores as bleu
from pipelines.captions import most_frequent_caption
from pipelines.region_grids import plain_references

# Tried on validation after training. Beam 3 never won on Flickr8k; beam 7 did for an ensemble
# with a self-critical member (bench/README.md).
BEAM_WIDTHS = (1, 5, 7)
LENGTH_PENALTIES = (0.0, 0.5, 1.0)  # GNMT alpha; no effect at width 1
SELECTION_BEAM = 3  # the beam that scores each epoch on validation
# Self-critical epochs are scored by the best of these, and so is the model they start from:
# they shorten the captions, which a length penalty of 0 at beam 3 judges more harshly than the
# decoding chosen at the end does (measured in bench/README.md).
SELF_CRITICAL_SELECTION = ((SELECTION_BEAM, 0.0), (5, 1.0))
SHEET_PHOTOS = 4


class ValidationBLEU(keras.callbacks.Callback):
    """After each epoch: BLEU-4 of the validation photos' beam-search captions from their cached
    grids, into the logs as `val_bleu4` (history.csv has it); the photo model is saved as
    best.keras when it beats every epoch before (those before a kill included: `best`).
    `decodings`: (beam width, length penalty) pairs; an epoch scores the best of them.
    `grids`: the validation grids, or a function that computes them afresh (a fine-tuned
    encoder changes them at every epoch)."""

    def __init__(self, photo_model, captioner: GridCaptioner, grids, references: list[list[str]],
                 path: Path, best: float | None = None, decodings=((SELECTION_BEAM, 0.0),)):
        super().__init__()
        self.photo_model, self.captioner = photo_model, captioner
        self.grids = grids if callable(grids) else np.asarray(grids, np.float32)
        self.references = references
        self.path, self.best, self.decodings = Path(path), best, tuple(decodings)

    def score(self) -> tuple[float, str]:
        """The best validation BLEU-4 over `decodings`, and that decoding's first caption."""
        tries = []
        grids = self.grids() if callable(self.grids) else self.grids
        for width, alpha in self.decodings:
            captions = self.captioner.captions(grids, width, alpha)
            tries.append((bleu(captions, self.references)["bleu4"], captions[0]))
        return max(tries)

    def on_epoch_end(self, epoch, logs=None):
        score, example = self.score()
        logs["val_bleu4"] = score
        if self.best is None or score > self.best:
            self.best = score
            self.photo_model.save(self.path)
        print(f"epoch {epoch + 1}: validation BLEU-4 {score:.2f} (best {self.best:.2f}),"
              f" e.g. {example!r}", flush=True)


def choose_decoding(captioner: GridCaptioner, grids: np.ndarray, references: list[list[str]]
                    ) -> dict:
    """The beam width and length penalty with the best validation BLEU-4, and every try."""
    grids = np.asarray(grids, np.float32)
    tries = []
    for width in BEAM_WIDTHS:
        for alpha in (LENGTH_PENALTIES if width > 1 else (0.0,)):
            scores = bleu(captioner.captions(grids, width, alpha), references)
            tries.append({"beam_width": width, "alpha": alpha,
                          "val_bleu4": round(scores["bleu4"], 2)})
    best = max(tries, key=lambda t: t["val_bleu4"])
    return {"beam_width": best["beam_width"], "alpha": best["alpha"], "validation": tries}


def test_figures(model: keras.Model, tokenizer, max_length: int, images: np.ndarray,
                 references: list[list[str]], frequent: str, beam_width: int,
                 alpha: float, settings: dict) -> tuple[dict, list[str]]:
    """BLEU-1..4 and CIDEr-D of the model on the test photos (decoded and resized as the
    SavedModel does, through the photo model's own encoder), of the most frequent training
    caption, and of an untrained copy (same pretrained encoder, fresh decoder)."""
    grids = photo_grids(model, images)
    captions = GridCaptioner(model, tokenizer, max_length).captions(grids, beam_width, alpha)
    untrained, _ = build_photo_models(tokenizer.size, **settings)
    untrained_captions = GridCaptioner(untrained, tokenizer, max_length).captions(
        grids, beam_width, alpha)
    figures = {**bleu(captions, references), "cider_d": corpus_cider_d(captions, references),
               "beam_width": beam_width, "alpha": alpha}
    for name, texts in (("most_frequent", [frequent] * len(images)),
                        ("untrained", untrained_captions)):
        scores = bleu(texts, references)
        figures.update({f"{name}_bleu{n}": scores[f"bleu{n}"] for n in range(1, 5)})
        figures[f"{name}_cider_d"] = corpus_cider_d(texts, references)
    figures["most_frequent_caption"] = frequent
    figures["untrained_example"] = untrained_captions[0]
    return figures, captions


def evaluate_photos(captioner, dataset: caption_data.CaptionData, run_dir: Path,
                    beam_width: int, alpha: float, settings: dict, examples: int = 8) -> dict:
    """`test_figures` of a run's best model on the test photos, with examples;
    evaluation.json and attention.png (photos with where each word looked) in `run_dir`.
    `captioner`: `models.captioner.Captioner` on photos."""
    images = caption_data.image_array(dataset.test.images, captioner.image_size)
    references = plain_references(dataset.test.references)
    frequent = most_frequent_caption(caption_data.Split(
        [], plain_references(dataset.train.references)))
    metrics, captions = test_figures(captioner.model, captioner.tokenizer, captioner.max_length,
                                     images, references, frequent, beam_width, alpha, settings)
    metrics.update(test_images=len(references), examples=[
        {"photo": Path(p).name, "references": r, "caption": c} for p, r, c in
        list(zip(dataset.test.images, references, captions))[:examples]])
    attention_sheet(captioner, images[:SHEET_PHOTOS], run_dir / "attention.png",
                    beam_width=beam_width, alpha=alpha)
    (run_dir / "evaluation.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
