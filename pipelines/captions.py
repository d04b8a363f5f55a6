"""Image-caption datasets: Flickr8k and COCO captions on disk, images decoded in tf.data.

A dataset is three splits of (image, references): an image (a file path, or an array for the
generated scenes in `pipelines.shape_scenes`) and all of its human captions, which BLEU uses as
references.

- Flickr8k (Hodosh, Young & Hockenmaier, 2013): a folder with `Flickr8k.token.txt`, lines
  `1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ...` (five per image), the images in
  `Flicker8k_Dataset/` (the archive's spelling), `Flickr8k_Dataset/`, `Images/` or next to the
  token file, and the standard split files `Flickr_8k.trainImages.txt`, `Flickr_8k.devImages.txt`,
  `Flickr_8k.testImages.txt` when present (else a fixed-seed 80/10/10 split by image).
- COCO captions (Lin et al., 2014): `captions_*.json` with "images" (id, file_name) and
  "annotations" (image_id, caption); images in the folder named like the JSON's split
  (`captions_val2017.json` -> `val2017/`) or next to the file.

Every image file is checked before training starts: a missing or unreadable image is a
`DataError` that names it, not a traceback from inside a tf.data iterator halfway through an epoch.

The tokenizer of the captions and the teacher-forced batches of (image, caption) pairs are here
too; the photos' batches, of cached region grids, are in `pipelines.region_grids`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import DataError, text_pairs

TOKEN_FILE = "Flickr8k.token.txt"
FLICKR_IMAGE_DIRS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", ".")
FLICKR_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "validation": "Flickr_8k.devImages.txt",
                      "test": "Flickr_8k.testImages.txt"}
SPLIT_SEED = 2024
VALIDATION_SHARE, TEST_SHARE = 0.1, 0.1


@dataclass
class Split:
    images: list  # file paths (str), or a uint8 array [n, height, width, 3]
    references: list[list[str]]

    def __len__(self) -> int:
        return len(self.references)


@dataclass
class CaptionData:
    name: str
    train: Split
    validation: Split
    test: Split


# ---------------------------------------------------------------------------------------------
# Checking and decoding images
# ---------------------------------------------------------------------------------------------


def check_images(paths: list[str], source: Path) -> None:
    """DataError naming the first missing or unreadable image (and how many are missing)."""
    from PIL import Image

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DataError(f"{source}: {len(missing)} of {len(paths)} images are missing, the first"
                        f" is {missing[0]}")
    for path in paths:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many types for a bad file
            raise DataError(f"{path}: unreadable image ({type(error).__name__}: {error})"
                            ) from None


def resize(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [..., H, W, 3] -> uint8 [..., size, size, 3]: antialiased bilinear, rounded to the
    nearest level (`serving.litert_captioning.resize` is the same in numpy, bit for bit)."""
    images = tf.image.resize(images, [size, size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)


def decode_image(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Encoded PNG/JPEG/BMP/GIF bytes -> uint8 [size, size, 3] (the SavedModel does the same).
    JPEG is decoded with the accurate integer DCT, as Pillow and most decoders do (TensorFlow's
    default, the fast one, is a level or two off on most pixels)."""
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
    return resize(image, size)


def image_array(images, size: int, batch_size: int = 64) -> np.ndarray:
    """A split's images as uint8 [n, size, size, 3]: files read and decoded in tf.data."""
    if isinstance(images, np.ndarray):
        if images.shape[1:3] == (size, size):
            return images
        return resize(images, size).numpy()
    data = (tf.data.Dataset.from_tensor_slices(list(images))
            .map(lambda p: decode_image(tf.io.read_file(p), size),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size))
    arrays = list(data.as_numpy_iterator())
    return np.concatenate(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)


def split_by_image(images: list[str], references: list[list[str]], seed: int = SPLIT_SEED
                   ) -> tuple[Split, Split, Split]:
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, int(round(TEST_SHARE * len(images))))
    n_val = max(1, int(round(VALIDATION_SHARE * len(images))))
    if n_test + n_val >= len(images):
        raise DataError(f"{len(images)} images are too few to split into train, validation and"
                        " test")
    parts = (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])
    return tuple(Split([images[i] for i in part], [references[i] for i in part])
                 for part in parts)


# ---------------------------------------------------------------------------------------------
# Tokens and teacher-forced batches
# ---------------------------------------------------------------------------------------------


def caption_pairs(split: Split, every_reference: bool) -> tuple[list[int], list[str]]:
    """(image index, caption) training pairs: every reference, or only the first (the scenes'
    canonical phrasing; the others stay references for BLEU)."""
    pairs = [(i, refs[j]) for i, refs in enumerate(split.references)
             for j in range(len(refs) if every_reference else 1)]
    return [i for i, _ in pairs], [c for _, c in pairs]


def standardized(captions: list[str]) -> list[str]:
    """Lower-cased, punctuation split off: the text the tokenizers count words in."""
    return [s.decode() for s in text_pairs.standardize(tf.constant(captions), lowercase=True)
            .numpy().tolist()]


def build_tokenizer(captions: list[str], max_tokens: int) -> text_pairs.Tokenizer:
    vocabulary = text_pairs.adapt_vocabulary(standardized(captions), "word", max_tokens,
                                             special=True)
    return text_pairs.Tokenizer(vocabulary, "word", lowercase=True)


def caption_ids(tokenizer: text_pairs.Tokenizer, captions: list[str], length: int) -> np.ndarray:
    """int32 [n, length + 2]: [start] tokens [end], 0-padded, cut to `length` tokens."""
    out = np.zeros([len(captions), length + 2], np.int32)
    for row, ids in enumerate(tokenizer.id_lists(captions)):
        ids = ids[:length]
        out[row, : len(ids) + 2] = [text_pairs.START, *ids, text_pairs.END]
    return out


def batches(images: np.ndarray, index: list[int], ids: np.ndarray, batch_size: int,
            shuffle: bool = False, seed: int = 0, multiple_of: int = 1) -> tf.data.Dataset:
    """((image uint8 [b, H, W, 3], caption_in [b, T]), caption_out [b, T]), teacher forcing."""
    count = len(index) - len(index) % multiple_of if len(index) >= multiple_of else len(index)
    data = tf.data.Dataset.from_tensor_slices((np.asarray(index[:count], np.int32), ids[:count]))
    if shuffle:  # the apps build each epoch's pipeline afresh, with its own seed
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=False)
    table = tf.constant(images)
    # `count` and the batch are multiples of the replicas, so every batch splits evenly (Keras
    # 3.15 under MirroredStrategy fails on one that does not).
    data = data.batch(batch_size)
    return data.map(lambda i, c: ((tf.gather(table, i), c[:, :-1]), c[:, 1:]),
                    num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# BLEU and the most-frequent-caption baseline
# ---------------------------------------------------------------------------------------------


def bleu_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-1..4 (0-100) with sacreBLEU against every reference of each image. sacreBLEU
    takes reference streams of equal length: an image with fewer references repeats its last
    one, which changes nothing (clipping takes the maximum count, the closest length is the
    same)."""
    from sacrebleu.metrics import BLEU

    most = max(len(r) for r in references)
    streams = [[refs[min(k, len(refs) - 1)] for refs in references] for k in range(most)]
    scores = {}
    for n in range(1, 5):
        metric = BLEU(max_ngram_order=n, lowercase=True)
        scores[f"bleu{n}"] = float(metric.corpus_score(hypotheses, streams).score)
    scores["bleu_signature"] = str(metric.get_signature())
    return scores


def most_frequent_caption(split: Split) -> str:
    """The "most frequent caption" baseline: the training caption that occurs most often."""
    counts: dict[str, int] = {}
    for refs in split.references:
        for caption in refs:
            counts[caption] = counts.get(caption, 0) + 1
    return max(sorted(counts), key=counts.get)


# ---------------------------------------------------------------------------------------------
# Flickr8k
# ---------------------------------------------------------------------------------------------


def read_flickr_tokens(path: Path) -> dict[str, list[str]]:
    """`image#k<TAB>caption` lines -> {image file name: [captions in k order]}."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_sign, _ = key.partition("#")
        if not tab or not hash_sign or not caption.strip():
            raise DataError(f"{path}:{number}: expected 'image.jpg#k<TAB>caption', got"
                            f" {line[:60]!r}")
        captions.setdefault(name.strip(), []).append(caption.strip())
    if not captions:
        raise DataError(f"{path}: no captions")
    return captions


def load_flickr8k(folder: Path) -> CaptionData:
    folder = Path(folder)
    token_file = folder / TOKEN_FILE
    if not token_file.is_file():
        raise DataError(f"{folder}: no {TOKEN_FILE} (a Flickr8k folder holds it and the images)")
    captions = read_flickr_tokens(token_file)
    image_dir = next((folder / d for d in FLICKR_IMAGE_DIRS
                      if (folder / d / next(iter(captions))).is_file()), None)
    if image_dir is None:
        image_dir = next((folder / d for d in FLICKR_IMAGE_DIRS if (folder / d).is_dir()
                          and d != "."), folder)
    names = sorted(captions)
    check_images([str(image_dir / n) for n in names], token_file)
    split_files = {s: folder / f for s, f in FLICKR_SPLIT_FILES.items()}
    if all(p.is_file() for p in split_files.values()):
        splits = []
        for path in split_files.values():
            listed = [n.strip() for n in path.read_text().splitlines() if n.strip()]
            unknown = [n for n in listed if n not in captions]
            if unknown:
                raise DataError(f"{path}: {len(unknown)} images have no caption in {TOKEN_FILE},"
                                f" the first is {unknown[0]}")
            splits.append(Split([str(image_dir / n) for n in listed],
                                [captions[n] for n in listed]))
        train, validation, test = splits
    else:
        train, validation, test = split_by_image([str(image_dir / n) for n in names],
                                                 [captions[n] for n in names])
    return CaptionData(f"Flickr8k ({folder})", train, validation, test)


# ---------------------------------------------------------------------------------------------
# COCO captions
# ---------------------------------------------------------------------------------------------


def load_coco(path: Path) -> CaptionData:
    """`captions_<split>.json`; images in `<split>/` beside it (or beside the file)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        files = {int(image["id"]): image["file_name"] for image in content["images"]}
        annotations = [(int(a["image_id"]), str(a["caption"]).strip())
                       for a in content["annotations"]]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a COCO captions JSON ({error})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a COCO captions JSON (missing or bad field {error})"
                        ) from None
    captions: dict[int, list[str]] = {}
    for image_id, caption in annotations:
        if image_id not in files:
            raise DataError(f"{path}: a caption refers to image id {image_id}, which is not in"
                            " 'images'")
        captions.setdefault(image_id, []).append(caption)
    if not captions:
        raise DataError(f"{path}: no captions")
    split_name = path.stem.removeprefix("captions_")
    image_dir = path.parent / split_name if (path.parent / split_name).is_dir() else path.parent
    ids = sorted(captions)
    images = [str(image_dir / files[i]) for i in ids]
    check_images(images, path)
    train, validation, test = split_by_image(images, [captions[i] for i in ids])
    return CaptionData(f"COCO {path.name}", train, validation, test)


def load(data: str) -> CaptionData:
    """A Flickr8k folder (or its token file) or a COCO captions JSON."""
    path = Path(data)
    if path.is_file() and path.suffix == ".json":
        return load_coco(path)
    if path.is_file() and path.name == TOKEN_FILE:
        return load_flickr8k(path.parent)
    if path.is_dir():
        return load_flickr8k(path)
    raise DataError(f"{data}: neither a Flickr8k folder ({TOKEN_FILE} + images) nor a COCO"
                    " captions_*.json file")
