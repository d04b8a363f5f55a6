"""Sentence pairs for translation: reading, tokenising, splitting, batching.

Sources:
- a tab-separated file of `source<TAB>target` lines (Tatoeba / manythings.org `spa.txt` style; a
  third column with the Tatoeba attribution is ignored), plain or inside a `.zip` (read directly);
- the generated corpus of number and date expressions (`pipelines.number_corpus`).

Text goes through three stages, each shared by training, evaluation and the exported models:

1. `read_pairs`: Unicode NFC normalisation (one code point for "é", however it was typed);
   `nfc` does it with TensorFlow ops, for text served in a graph (`Tokenizer(normalize=True)`).
2. `standardize` (TensorFlow ops, so it runs in `tf.data` and inside a SavedModel): optional
   lower-casing, punctuation split off as tokens of its own ("¿Qué?" -> "¿ Qué ?") unless the
   text is split into characters, unusual spaces made plain. `serving.litert_seq2seq` repeats
   it in pure Python from the same rules, which `STANDARDIZE_RULES` spells out.
3. `keras.layers.TextVectorization` turns standardised text into ids, one vocabulary per side,
   split into words (default) or characters (for languages that glue words together, such as
   German numerals: "siebenundneunzig"). Ids 0 and 1 are padding and out-of-vocabulary; the
   target vocabulary puts `[start]` and `[end]` at 2 and 3.

`detokenize` inverts (2) well enough for BLEU to be computed on real text: tokens are joined and
the spaces a punctuation split added are removed again ("9 . Mai" -> "9. Mai").
"""

import functools
import io
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import DataError

PAD, UNK, START, END = 0, 1, 2, 3
# The reserved ids by name, as the LiteRT runners read them from litert.json.
SPECIAL_IDS = {"pad": PAD, "unk": UNK, "start": START, "end": END}
START_TOKEN, END_TOKEN = "[start]", "[end]"
SPLITS = ("word", "character")

# Standardisation rules as RE2 / Python `re` patterns (both engines read them the same way).
PUNCTUATION = '([.,!?¿¡;:"«»()-])'
SPACES = "[ \t\n\r\f\v\u00a0\u2009\u202f]+"
# Detokenisation: no space before closing punctuation, none after opening, none around "-".
NO_SPACE_BEFORE = " ([.,!?;:)»])"
NO_SPACE_AFTER = "([¿¡(«]) "
GLUED = " - "
STANDARDIZE_RULES = {
    "unicode": "NFC", "punctuation": PUNCTUATION, "spaces": SPACES,
    "no_space_before": NO_SPACE_BEFORE, "no_space_after": NO_SPACE_AFTER, "glued": GLUED,
}

SPLIT_SEED = 2024
BUCKET_WIDTH = 4  # tokens: sentences of similar length share a batch, so padding stays small


# ---------------------------------------------------------------------------------------------
# Reading tab-separated pairs
# ---------------------------------------------------------------------------------------------


def _text_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The pairs file in a zip: the largest .txt/.tsv member, skipping notes like _about.txt."""
    candidates = [
        info for info in archive.infolist()
        if not info.is_dir() and info.filename.lower().endswith((".txt", ".tsv"))
        and not Path(info.filename).name.startswith(("_", "."))
    ]
    if not candidates:
        raise DataError(f"{path}: the zip archive holds no .txt or .tsv file of sentence pairs")
    return max(candidates, key=lambda info: info.file_size).filename


def _raw_lines(path: Path) -> tuple[str, Iterable[bytes]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        member = _text_member(archive, path)
        return f"{path}:{member}", io.BytesIO(archive.read(member))
    return str(path), path.open("rb")


def read_pairs(path: Path, reverse: bool = False) -> list[tuple[str, str]]:
    """`source<TAB>target[<TAB>attribution]` lines -> NFC-normalised (source, target) pairs.

    Blank lines are skipped; anything else that is not a pair stops the run with the file and
    line number. `reverse` swaps the columns (Tatoeba's `spa.txt` is English first).
    """
    name, lines = _raw_lines(Path(path))
    pairs = []
    with lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{name}:{number}: not UTF-8 text ({error.reason} at byte"
                                f" {error.start})") from None
            line = line.rstrip("\r\n").lstrip("\ufeff")
            if not line.strip():
                continue
            columns = line.split("\t")
            if len(columns) == 1:
                raise DataError(f"{name}:{number}: no tab between source and target sentence")
            if len(columns) > 3:
                raise DataError(f"{name}:{number}: {len(columns)} tab-separated columns; expected"
                                " 2 (source, target) or 3 (with an attribution)")
            source, target = (unicodedata.normalize("NFC", c.strip()) for c in columns[:2])
            if not source or not target:
                raise DataError(f"{name}:{number}: empty {'source' if not source else 'target'}"
                                " sentence")
            pairs.append((target, source) if reverse else (source, target))
    if not pairs:
        raise DataError(f"{name}: no sentence pairs (the file is empty)")
    return pairs


# ---------------------------------------------------------------------------------------------
# Unicode NFC in the graph. Core TensorFlow has no normaliser (`tf.strings.unicode_transcode`
# only converts between encodings; TensorFlow Text's `normalize_utf8` is a custom op that a stock
# TensorFlow Serving cannot load), so `nfc` runs Unicode's algorithm with core ops on tables
# taken from Python's `unicodedata`: the graph normalises exactly as `unicodedata.normalize`.
# ---------------------------------------------------------------------------------------------

CODE_POINTS = 0x110000
DECOMPOSABLE_BELOW = 0x30000  # no code point from here up decomposes or has a combining class
HANGUL_SYLLABLES = range(0xAC00, 0xD7A4)
HANGUL_LEADS, HANGUL_VOWELS, HANGUL_TRAILS = range(0x1100, 0x1113), range(0x1161, 0x1176), \
    range(0x11A8, 0x11C3)


@functools.cache
def nfc_tables() -> dict[str, np.ndarray]:
    """Python's Unicode data as sorted arrays: each code point's full canonical decomposition
    (-1 padded), the non-zero canonical combining classes, and the primary composites keyed by
    `first * CODE_POINTS + second`. Hangul syllables stay whole; composing a leading with a
    vowel jamo, and such a syllable with a trailing jamo, gives what decomposing them would."""
    decompositions, classes, composites = {}, {}, {}
    for code in range(DECOMPOSABLE_BELOW):
        if 0xD800 <= code < 0xE000:  # surrogates
            continue
        char = chr(code)
        if unicodedata.combining(char):
            classes[code] = unicodedata.combining(char)
        if code in HANGUL_SYLLABLES:
            continue
        if (nfd := unicodedata.normalize("NFD", char)) != char:
            decompositions[code] = [ord(c) for c in nfd]
        parts = unicodedata.decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<") and \
                unicodedata.normalize("NFC", char) == char:  # not a composition exclusion
            composites[int(parts[0], 16) * CODE_POINTS + int(parts[1], 16)] = code
    for lead in HANGUL_LEADS:
        for vowel in HANGUL_VOWELS:
            syllable = ord(unicodedata.normalize("NFC", chr(lead) + chr(vowel)))
            composites[lead * CODE_POINTS + vowel] = syllable
            for trail in HANGUL_TRAILS:
                composites[syllable * CODE_POINTS + trail] = syllable + trail - HANGUL_TRAILS[0] + 1
    width = max(len(d) for d in decompositions.values())
    decomposed = sorted(decompositions)
    return {
        "decomposed": np.array(decomposed, np.int32),
        "decompositions": np.array([decompositions[c] + [-1] * (width - len(decompositions[c]))
                                    for c in decomposed], np.int32),
        "classed": np.array(sorted(classes), np.int32),
        "classes": np.array([classes[c] for c in sorted(classes)], np.int32),
        "pairs": np.array(sorted(composites), np.int64),
        "composites": np.array([composites[k] for k in sorted(composites)], np.int32),
    }


def _find(keys: tf.Tensor, values: tf.Tensor, query: tf.Tensor, default) -> tf.Tensor:
    """values[i] where keys[i] == query (keys sorted), else `default`: a lookup without a table
    resource, so the arrays are plain constants of whatever graph calls it."""
    at = tf.minimum(tf.searchsorted(keys, query), tf.size(keys) - 1)
    found = tf.equal(tf.gather(keys, at), query)
    if values.shape.rank == 2:
        found = found[:, None]
    return tf.where(found, tf.gather(values, at), default)


def nfc(text) -> tf.Tensor:
    """string tensor (any shape) -> the same strings in Unicode NFC, as `unicodedata.normalize(
    "NFC", ...)` gives them: canonical decomposition, canonical ordering of combining marks,
    canonical composition. Bytes that are not UTF-8 become U+FFFD."""
    text = tf.convert_to_tensor(text, tf.string)
    return tf.ensure_shape(_nfc_graph(text), text.shape)


@tf.function(input_signature=[tf.TensorSpec(None, tf.string)], autograph=False)
def _nfc_graph(text: tf.Tensor) -> tf.Tensor:
    ascii_only = tf.reduce_all(tf.strings.regex_full_match(text, "[\\x00-\\x7f]*"))
    return tf.cond(ascii_only, lambda: tf.identity(text), lambda: _nfc(text))  # ASCII is NFC


def _nfc(text: tf.Tensor) -> tf.Tensor:
    tables = {name: tf.constant(array) for name, array in nfc_tables().items()}
    codes = tf.strings.unicode_decode(tf.reshape(text, [-1]), "UTF-8", errors="replace")
    rows = codes.nrows(out_type=tf.int32)
    # 1. Decompose: every code point -> its full canonical decomposition (itself, -1 padded).
    flat = codes.flat_values
    itself = tf.pad(flat[:, None], [[0, 0], [0, tables["decompositions"].shape[1] - 1]],
                    constant_values=-1)
    expanded = _find(tables["decomposed"], tables["decompositions"], flat, itself)
    kept = expanded >= 0
    lengths = tf.math.unsorted_segment_sum(tf.reduce_sum(tf.cast(kept, tf.int32), axis=1),
                                           tf.cast(codes.value_rowids(), tf.int32), rows)
    flat = tf.boolean_mask(expanded, kept)
    # 2. Order: each run of combining marks sorted by class, stably; starters (class 0) stay.
    classes = _find(tables["classed"], tables["classes"], flat, 0)
    row_ids = tf.repeat(tf.range(rows), lengths)
    row_start = tf.not_equal(row_ids, tf.pad(row_ids, [[1, 0]], constant_values=-1)[:-1])
    run = tf.cumsum(tf.cast(row_start | tf.equal(classes, 0), tf.int64))
    order = tf.argsort(run * 256 + tf.cast(classes, tf.int64), stable=True)
    flat, classes = tf.gather(flat, order), tf.gather(classes, order)
    # 3. Compose (Unicode's reference algorithm, all strings at once, one position a step): a
    #    mark joins the last starter unless a kept mark of the same class or a starter (other
    #    than the starter itself) stands between them.
    codes = tf.RaggedTensor.from_row_lengths(flat, lengths).to_tensor(-1)
    classes = tf.RaggedTensor.from_row_lengths(classes, lengths).to_tensor(0)
    every_row = tf.range(rows)

    def step(i, out, starter_at, starter, last_class):
        code, code_class = codes[:, i], classes[:, i]
        composite = _find(tables["pairs"], tables["composites"],
                          tf.cast(starter, tf.int64) * CODE_POINTS + tf.cast(code, tf.int64), -1)
        joins = ((code >= 0) & (starter_at >= 0) & (composite >= 0)
                 & ((last_class < code_class) | (last_class == 0)))
        at_i = tf.stack([every_row, tf.fill([rows], i)], axis=1)
        out = tf.tensor_scatter_nd_update(out, at_i, tf.where(joins, -1, code))
        out = tf.tensor_scatter_nd_update(
            out, tf.stack([every_row, tf.where(joins, starter_at, i)], axis=1),
            tf.where(joins, composite, code))
        kept = (code >= 0) & ~joins
        starts = kept & tf.equal(code_class, 0)
        return (i + 1, out, tf.where(starts, i, starter_at),
                tf.where(joins, composite, tf.where(starts, code, starter)),
                tf.where(kept, code_class, last_class))

    none = tf.fill([rows], -1)
    _, out, *_ = tf.while_loop(lambda i, *_: i < tf.shape(codes)[1], step,
                               (0, codes, none, none, tf.fill([rows], 256)))
    composed = tf.strings.unicode_encode(tf.ragged.boolean_mask(out, out >= 0), "UTF-8")
    return tf.reshape(composed, tf.shape(text))


# ---------------------------------------------------------------------------------------------
# Standardisation and detokenisation (TensorFlow ops: tf.data, eager code, SavedModel graphs)
# ---------------------------------------------------------------------------------------------


def standardize(text: tf.Tensor, lowercase: bool = False, split: str = "word") -> tf.Tensor:
    """string tensor -> string tensor with single plain spaces and, when split into words,
    punctuation as separate tokens (characters are tokens already)."""
    if lowercase:
        text = tf.strings.lower(text, encoding="utf-8")
    if split == "word":
        text = tf.strings.regex_replace(text, PUNCTUATION, r" \1 ")
    text = tf.strings.regex_replace(text, SPACES, " ")
    return tf.strings.strip(text)


def detokenize(tokens: tf.Tensor, split: str = "word") -> tf.Tensor:
    """string tokens [..., length] ("" after the end) -> string [...]: the readable sentence."""
    if split == "character":
        return tf.strings.reduce_join(tokens, axis=-1)
    text = tf.strings.strip(tf.strings.reduce_join(tokens, axis=-1, separator=" "))
    text = tf.strings.regex_replace(text, " +", " ")  # empty tokens after the end
    text = tf.strings.regex_replace(text, NO_SPACE_BEFORE, r"\1")
    text = tf.strings.regex_replace(text, NO_SPACE_AFTER, r"\1")
    return tf.strings.regex_replace(text, GLUED, "-")


# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------


def vectorizer(vocabulary: list[str], split: str) -> "keras.layers.TextVectorization":  # noqa: F821
    """A TextVectorization layer over standardised text; `vocabulary` excludes pad and UNK."""
    import keras

    return keras.layers.TextVectorization(
        standardize=None, split="whitespace" if split == "word" else "character",
        vocabulary=vocabulary, output_mode="int", ragged=True,
    )


def adapt_vocabulary(texts: list[str], split: str, max_tokens: int, special: bool) -> list[str]:
    """The `max_tokens` most frequent tokens of standardised `texts` (TextVectorization.adapt),
    without pad and UNK; with `special`, `[start]` and `[end]` first (ids 2 and 3)."""
    import keras

    layer = keras.layers.TextVectorization(
        max_tokens=max_tokens + 2, standardize=None,
        split="whitespace" if split == "word" else "character",
    )
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
    words = layer.get_vocabulary(include_special_tokens=False)
    return ([START_TOKEN, END_TOKEN] if special else []) + [w for w in words
                                                            if w not in (START_TOKEN, END_TOKEN)]


def read_vocabulary(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_vocabulary(path: Path, vocabulary: list[str]) -> None:
    path.write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Corpus: split, vectorise, batch
# ---------------------------------------------------------------------------------------------


def split_pairs(pairs: list[tuple[str, str]], validation: float | int, test: float | int,
                seed: int = SPLIT_SEED) -> tuple[list, list, list]:
    """Fixed-seed train / validation / test split in which all pairs that share a source sentence
    fall in the same split, so no test source sentence is ever seen in training.

    Sizes below 1 are shares of the pairs, from 1 up counts of pairs."""
    by_source: dict[str, list] = {}
    for pair in pairs:
        by_source.setdefault(pair[0], []).append(pair)
    sources = sorted(by_source)
    order = np.random.default_rng(seed).permutation(len(sources))
    wanted = [int(round(s * len(pairs))) if s < 1 else int(s) for s in (test, validation)]
    if sum(wanted) >= len(pairs):
        raise DataError(f"{len(pairs)} sentence pairs are too few for {wanted[0]} test and"
                        f" {wanted[1]} validation pairs")
    splits: list[list] = [[], [], []]  # test, validation, train
    current = 0
    for index in order:
        while current < 2 and len(splits[current]) >= wanted[current]:
            current += 1
        splits[current].extend(by_source[sources[index]])
    test_pairs, validation_pairs, train_pairs = splits
    return train_pairs, validation_pairs, test_pairs


@dataclass
class Tokenizer:
    """Standardisation + vocabulary for one side of the pairs; with `normalize`, Unicode NFC
    first (`nfc`, in the graph: for text that did not come through `read_pairs`, a client's)."""

    vocabulary: list[str]  # without pad and UNK
    split: str = "word"
    lowercase: bool = False
    layer: object = field(default=None, repr=False)
    normalize: bool = False

    def __post_init__(self):
        self.layer = vectorizer(self.vocabulary, self.split)

    @property
    def size(self) -> int:
        return len(self.vocabulary) + 2

    def ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """string [batch] -> ragged int32 [batch, (tokens)], no start or end tokens."""
        if self.normalize:
            texts = nfc(texts)
        return tf.cast(self.layer(standardize(texts, self.lowercase, self.split)), tf.int32)

    def id_lists(self, texts: list[str], batch: int = 4096) -> list[np.ndarray]:
        out = []
        for start in range(0, len(texts), batch):
            ragged = self.ids(tf.constant(texts[start : start + batch]))
            out.extend(np.asarray(row, dtype=np.int32) for row in ragged.to_list())
        return out

    def tokens(self, ids: tf.Tensor) -> tf.Tensor:
        """int ids [..., length] -> string tokens, "" for pad, start and end."""
        table = tf.constant(["", "[UNK]", *self.vocabulary])
        hidden = ids == PAD
        if self.vocabulary[:2] == [START_TOKEN, END_TOKEN]:
            hidden = hidden | (ids == START) | (ids == END)
        return tf.where(hidden, "", tf.gather(table, ids))

    def text(self, ids: tf.Tensor) -> tf.Tensor:
        return detokenize(self.tokens(ids), self.split)


def build_tokenizers(train_pairs, max_tokens: tuple[int, int], splits: tuple[str, str],
                     lowercase: bool) -> tuple[Tokenizer, Tokenizer]:
    sources = [s for s, _ in train_pairs]
    targets = [t for _, t in train_pairs]
    vocabularies = []
    for texts, limit, split, special in ((sources, max_tokens[0], splits[0], False),
                                         (targets, max_tokens[1], splits[1], True)):
        standardized = [s.decode() for s in
                        standardize(tf.constant(texts), lowercase, split).numpy().tolist()]
        vocabularies.append(adapt_vocabulary(standardized, split, limit, special))
    return (Tokenizer(vocabularies[0], splits[0], lowercase),
            Tokenizer(vocabularies[1], splits[1], lowercase))


def encode_pairs(pairs, source: Tokenizer, target: Tokenizer,
                 max_length: int | None = None) -> tuple[list, list]:
    """Id sequences (source, target with [start] ... [end]); with `max_length`, pairs longer
    than it on either side (start and end not counted) are dropped."""
    source_ids = source.id_lists([s for s, _ in pairs])
    target_ids = target.id_lists([t for _, t in pairs])
    kept_source, kept_target = [], []
    for s, t in zip(source_ids, target_ids):
        if max_length is not None and (len(s) > max_length or len(t) > max_length):
            continue
        if len(s) == 0:
            continue
        kept_source.append(s)
        kept_target.append(np.concatenate([[START], t, [END]]).astype(np.int32))
    return kept_source, kept_target


def batches(source_ids: list, target_ids: list, batch_size: int, shuffle: bool = False,
            seed: int = SPLIT_SEED, multiple_of: int = 1) -> tf.data.Dataset:
    """((source [batch, S], target_in [batch, T]), target_out [batch, T]) padded with 0,
    teacher forcing: target_in is the target without its last token, target_out without its
    first. Bucketed by length so a batch holds sentences of similar length.

    `multiple_of`: each bucket's last, partial batch is cut to a multiple of this (dropped if
    that leaves nothing). MirroredStrategy splits a batch between its replicas, and Keras 3.15
    fails on a first batch that does not split evenly."""
    def padded(rows):  # [n, longest] and the lengths; each element is cut back to its length
        array = np.zeros([len(rows), max(len(r) for r in rows)], np.int32)
        for i, row in enumerate(rows):
            array[i, : len(row)] = row
        return array, np.array([len(r) for r in rows], np.int32)

    data = tf.data.Dataset.from_tensor_slices((*padded(source_ids), *padded(target_ids)))
    data = data.map(lambda s, s_len, t, t_len: (s[:s_len], t[:t_len]))
    if shuffle:
        data = data.shuffle(len(source_ids), seed=seed, reshuffle_each_iteration=True)
    longest = max(max(len(s) for s in source_ids), max(len(t) for t in target_ids))
    boundaries = list(range(BUCKET_WIDTH + 1, longest + 1, BUCKET_WIDTH))
    data = data.bucket_by_sequence_length(
        lambda s, t: tf.maximum(tf.shape(s)[0], tf.shape(t)[0]),
        bucket_boundaries=boundaries, bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
    )
    # Each bucket ends with one partial batch, so the number of batches is known in advance;
    # telling tf.data lets Keras show a complete progress bar from the first epoch.
    lengths = np.maximum([len(s) for s in source_ids], [len(t) for t in target_ids])
    counts = np.bincount(np.searchsorted(boundaries, lengths, side="right"))
    remainders = counts % batch_size
    batch_count = int(np.sum(counts // batch_size) + np.sum(remainders >= multiple_of))
    if multiple_of > 1:
        def cut(s, t):
            keep = tf.shape(s)[0] // multiple_of * multiple_of
            return s[:keep], t[:keep]

        data = data.map(cut).filter(lambda s, t: tf.shape(s)[0] > 0)
    data = data.apply(tf.data.experimental.assert_cardinality(batch_count))
    return data.map(lambda s, t: ((s, t[:, :-1]), t[:, 1:])).prefetch(tf.data.AUTOTUNE)
