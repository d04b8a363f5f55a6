"""Photos as cached region grids, and their captions as fixed-size blocks: what the photo
captioner (`models.photo_captioner`) trains on.

With a frozen encoder a photo's 7x7 grid of MobileNetV2 features is the same at every epoch, so
it is computed once per run and kept on disk in float16 (`<run>/region_grids/<split>.npy`, 98 KB
a photo; the 5,997 Flickr8k training photos take 0.59 GB), next to a JSON key naming what made
it (backbone, alpha, the weights file's digest, image size, the list of photos). An epoch then
reads the grids through a memory map and costs only the decoder; a resumed or repeated run with
the same key reads the file instead of recomputing it.

No photo augmentation: a flipped or cropped photo has another grid, which a cache of one grid
per photo cannot hold (flips would also swap "left" and "right" in the captions). The captions
vary instead: each photo comes with all of its references at every epoch.

    grid_batches(grids, captions, photos_per_batch)
        -> ((regions float16 [b, R, C], captions_in int32 [b, K, L]), captions_out [b * K, L])
"""

import hashlib
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import DataError, text_pairs
from pipelines import captions as caption_data

CACHE_DTYPE = np.float16
ENCODE_BATCH = 32  # photos per backbone call while filling the cache
MIN_COUNT = 5  # a training word seen fewer times is [UNK] (Xu et al.'s threshold on Flickr8k)
MAX_WORDS = 22  # longer training captions are cut (3% of Flickr8k's)
PUNCTUATION = re.compile(r"[^\w\s']")


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


class RegionCache:
    """`<folder>/<split>.npy` grids with `<split>.json` keys. `grid_fn(uint8 photos [b, S, S, 3])
    -> [b, R, C]` is the frozen encoder; `key` what makes a grid valid. `computed` counts the
    photos put through `grid_fn` (tests check that a second epoch computes none)."""

    def __init__(self, folder: Path, grid_fn, key: dict, image_size: int):
        self.folder, self.grid_fn, self.key, self.size = Path(folder), grid_fn, key, image_size
        self.computed = 0

    def grids(self, split: str, paths: list[str]) -> np.ndarray:
        """float16 [n, R, C], memory-mapped from disk, computed first if not there or stale."""
        path, meta = self.folder / f"{split}.npy", self.folder / f"{split}.json"
        key = {**self.key, "image_size": self.size, "photos": len(paths),
               "photo_list": hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]}
        if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
            return np.load(path, mmap_mode="r")
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        try:
            self._fill(partial, paths)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        meta.write_text(json.dumps(key, indent=1) + "\n")
        return np.load(path, mmap_mode="r")

    def _fill(self, partial: Path, paths: list[str]) -> None:
        out = None
        photos = (tf.data.Dataset.from_tensor_slices(list(paths))
                  .map(lambda p: caption_data.decode_image(tf.io.read_file(p), self.size),
                       num_parallel_calls=tf.data.AUTOTUNE)
                  .batch(ENCODE_BATCH).prefetch(2))
        done = 0
        try:
            for batch in photos:
                grids = np.asarray(self.grid_fn(batch), CACHE_DTYPE)
                if out is None:
                    out = np.lib.format.open_memmap(partial, "w+", CACHE_DTYPE,
                                                    (len(paths), *grids.shape[1:]))
                out[done : done + len(grids)] = grids
                done += len(grids)
                self.computed += len(grids)
        except tf.errors.InvalidArgumentError:
            raise DataError(f"{first_undecodable(paths[done:], self.size)}: does not decode as"
                            " an image") from None
        if out is not None:
            out.flush()
            del out


def cached_grids(cache: RegionCache, photos: dict[str, list[str]], run_dir: Path
                 ) -> dict[str, np.ndarray]:
    """Each split's grids from `cache`; a photo that does not decode is a DataError and, in a
    run directory this call created, leaves nothing behind."""
    fresh = not Path(run_dir).exists()
    try:
        return {split: cache.grids(split, paths) for split, paths in photos.items()}
    except DataError:
        if fresh:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def first_undecodable(paths: list[str], size: int) -> str:
    """The first photo TensorFlow cannot decode (its tf.data error does not say which)."""
    for path in paths:
        try:
            caption_data.decode_image(tf.io.read_file(path), size)
        except tf.errors.InvalidArgumentError:
            return path
    return paths[0] if paths else "?"


# ---------------------------------------------------------------------------------------------
# Captions: vocabulary with a minimum count, K references per photo as id blocks
# ---------------------------------------------------------------------------------------------


def plain(caption: str) -> str:
    """Lower case without punctuation, as coco-caption scores (and Xu et al.'s figures are):
    "A dog runs ." -> "a dog runs"."""
    return " ".join(PUNCTUATION.sub(" ", caption.lower()).split())


def plain_references(references: list[list[str]]) -> list[list[str]]:
    return [[plain(c) for c in refs] for refs in references]


@dataclass
class PhotoCaptions:
    """The training and validation captions as the photo captioner reads them: `references`
    plain, `blocks` [photos, per_photo, length + 2] ids per split."""

    tokenizer: text_pairs.Tokenizer
    references: dict[str, list[list[str]]]
    per_photo: int  # captions of each photo in a batch (the fewest any photo has: 5 on Flickr8k)
    length: int  # words, end token not counted
    blocks: dict[str, np.ndarray]


def photo_captions(splits: dict[str, list[list[str]]], min_count: int = MIN_COUNT,
                   max_words: int = MAX_WORDS) -> PhotoCaptions:
    """`splits`: {"train": references, "validation": references}; the vocabulary comes from
    the training captions, words seen at least `min_count` times."""
    references = {name: plain_references(refs) for name, refs in splits.items()}
    tokenizer = text_pairs.Tokenizer(vocabulary(
        [c for refs in references["train"] for c in refs], min_count), "word", True)
    per_photo = min(len(refs) for split in references.values() for refs in split)
    length = min(max_words, max(len(c.split()) for r in references["train"] for c in r))
    return PhotoCaptions(tokenizer, references, per_photo, length, {
        name: caption_blocks(tokenizer, refs, per_photo, length)
        for name, refs in references.items()})


def vocabulary(captions: list[str], min_count: int = MIN_COUNT) -> list[str]:
    """[start], [end], then the words seen at least `min_count` times, most frequent first."""
    counts = Counter(word for text in caption_data.standardized(captions)
                     for word in text.split())
    words = sorted((w for w, n in counts.items() if n >= min_count),
                   key=lambda w: (-counts[w], w))
    return [text_pairs.START_TOKEN, text_pairs.END_TOKEN, *(
        w for w in words if w not in (text_pairs.START_TOKEN, text_pairs.END_TOKEN))]


def caption_blocks(tokenizer: text_pairs.Tokenizer, references: list[list[str]], per_photo: int,
                   length: int) -> np.ndarray:
    """int32 [photos, per_photo, length + 2]: [start] words [end], 0-padded, cut to `length`
    words; a photo with more references keeps its first `per_photo`."""
    flat = [refs[k] for refs in references for k in range(per_photo)]
    return caption_data.caption_ids(tokenizer, flat, length).reshape(
        len(references), per_photo, length + 2)


def grid_batches(grids: np.ndarray, blocks: np.ndarray, photos_per_batch: int,
                 shuffle: bool = False, seed: int = 0) -> tf.data.Dataset:
    """((regions [b, R, C], captions_in [b, K, L]), captions_out [b * K, L]): each batch reads
    its photos' grids from the memory map (rows in file order: the batch is a set) with all
    their captions."""
    order = np.random.default_rng(seed).permutation(len(grids)) if shuffle else np.arange(
        len(grids))
    starts = range(0, len(order), photos_per_batch)
    rows = [np.sort(order[s : s + photos_per_batch]) for s in starts]
    shape = grids.shape[1:]

    def read(index):
        return np.asarray(grids[index], CACHE_DTYPE), blocks[index]

    def load(index):
        regions, ids = tf.numpy_function(read, [index], (tf.float16, tf.int32))
        regions.set_shape([None, *shape])
        ids.set_shape([None, *blocks.shape[1:]])
        return (regions, ids[:, :, :-1]), tf.reshape(ids[:, :, 1:], [-1, blocks.shape[2] - 1])

    data = tf.data.Dataset.from_generator(lambda: iter(rows), output_signature=tf.TensorSpec(
        [None], tf.int64))
    return data.map(load, num_parallel_calls=2).prefetch(2).apply(
        tf.data.experimental.assert_cardinality(len(rows)))
