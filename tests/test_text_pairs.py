"""Sentence-pair pipeline and the generated corpus: reading files (plain, 3 columns, zip), every
kind of bad input with file and line, standardisation, vocabularies, split, batching."""

import re
import unicodedata
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from pipelines import DataError, number_corpus
from pipelines import text_pairs as tp

pytestmark = pytest.mark.fast  # the edit-test tier: make test-fast

SPA = "Go.\tVe.\nWho?\t¿Quién?\nWait!\t¡Espera!\n"


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


# --- reading ------------------------------------------------------------------------------------


def test_reads_two_and_three_column_files_and_zip_archives(tmp_path):
    two = tp.read_pairs(write(tmp_path / "spa.txt", SPA))
    assert two == [("Go.", "Ve."), ("Who?", "¿Quién?"), ("Wait!", "¡Espera!")]
    attribution = "".join(f"{line}\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}\n"
                          for i, line in enumerate(SPA.splitlines()))
    assert tp.read_pairs(write(tmp_path / "fra.txt", attribution)) == two
    archive = tmp_path / "spa-eng.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("spa-eng/_about.txt", "About this file\nno pairs here\n")
        zipped.writestr("spa-eng/spa.txt", SPA)
    assert tp.read_pairs(archive) == two
    assert tp.read_pairs(archive, reverse=True)[1] == ("¿Quién?", "Who?")


def test_unicode_is_normalised_and_blank_lines_skipped(tmp_path):
    decomposed = "Cafe\u0301\tcafe\u0301\r\n\n  \nOK\tvale\n"  # e + combining acute, CRLF
    pairs = tp.read_pairs(write(tmp_path / "nfd.txt", decomposed))
    assert pairs == [("Café", "café"), ("OK", "vale")]
    assert len(pairs[0][0]) == 4


@pytest.mark.parametrize("content, message", [
    (b"", "no sentence pairs (the file is empty)"),
    (b"\n\n", "no sentence pairs"),
    (b"Go.\tVe.\nHello there\n", ":2: no tab between source and target sentence"),
    ("Go.\tVe.\nAdiós\tBye\n".encode("latin-1"), ":2: not UTF-8 text"),
    (b"a\tb\tc\td\n", ":1: 4 tab-separated columns; expected 2"),
    (b"Go.\t \n", ":1: empty target sentence"),
])
def test_bad_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)) as error:
        tp.read_pairs(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_missing_file_and_zip_without_pairs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        tp.read_pairs(tmp_path / "absent.txt")
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("README.md", "nothing")
    with pytest.raises(DataError, match="holds no .txt or .tsv file"):
        tp.read_pairs(archive)


# --- standardisation and detokenisation -------------------------------------------------------


def test_standardize_splits_punctuation_and_detokenize_puts_it_back():
    texts = ["¿Quién es?", "Mittwoch, 9. Mai 2018", "quatre-vingt-dix-sept", "Hi  there\u00a0!"]
    standardized = [t.decode() for t in tp.standardize(tf.constant(texts)).numpy()]
    assert standardized == ["¿ Quién es ?", "Mittwoch , 9 . Mai 2018",
                            "quatre - vingt - dix - sept", "Hi there !"]
    tokens = tf.strings.split(tf.constant(standardized)).to_tensor("")
    restored = [t.decode() for t in tp.detokenize(tokens).numpy()]
    assert restored == ["¿Quién es?", "Mittwoch, 9. Mai 2018", "quatre-vingt-dix-sept",
                        "Hi there!"]
    lowered = tp.standardize(tf.constant(["ÉCOLE Über"]), lowercase=True).numpy()[0].decode()
    assert lowered == "école über"
    characters = tp.standardize(tf.constant(["9. Mai  2018"]), split="character")
    assert characters.numpy()[0].decode() == "9. Mai 2018"  # characters need no punctuation split


def test_graph_nfc_equals_pythons_on_every_code_point_and_hard_sequences():
    """`nfc` (core TensorFlow ops) against `unicodedata.normalize("NFC")`: every code point
    that can decompose or combine, alone, decomposed and between a letter and a mark, and the
    sequences the algorithm turns on: marks out of canonical order, a mark blocked by one of
    the same class, composition exclusions, singletons, Hangul jamo, two starters that compose
    (Oriya), invalid UTF-8 (U+FFFD, as Python's errors="replace" decodes it)."""
    codes = [chr(c) for c in range(tp.DECOMPOSABLE_BELOW) if not 0xD800 <= c < 0xE000]
    texts = (codes + [unicodedata.normalize("NFD", c) for c in codes]
             + ["a" + c + "\u0301" for c in codes] + [c + "\u0323\u0301" for c in codes])
    texts += ["e\u0301\u0323", "e\u0302\u0301", "e\u0301\u0301", "a\u0308\u0304x", "\u0958",
              "\u212b\u2126\u037e", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u0b47\u0b3e",
              "\u0301e", "", "Cafe\u0301 cre\u0300me bru\u0302le\u0301e", "\U0001f600\u0301"]
    got = [t.decode() for t in tp.nfc(tf.constant(texts)).numpy()]
    wrong = [ascii(t) for t, g in zip(texts, got) if g != unicodedata.normalize("NFC", t)]
    assert not wrong, wrong[:5]
    bad = tp.nfc(tf.constant([[b"Adi\xf3s", b"n\xcc\x83"]]))  # any shape; latin-1 byte
    assert bad.shape == (1, 2) and [t.decode() for t in bad.numpy()[0]] == [
        b"Adi\xf3s".decode("utf-8", "replace"), "\u00f1"]


def test_vocabularies_put_start_and_end_at_2_and_3_and_split_characters():
    pairs = [("one", "un"), ("two", "deux"), ("twenty-one", "vingt et un"), ("one", "un")]
    source, target = tp.build_tokenizers(pairs, (100, 100), ("word", "character"), False)
    assert target.vocabulary[:2] == [tp.START_TOKEN, tp.END_TOKEN]
    assert source.vocabulary[0] == "one"  # most frequent first
    assert set(target.vocabulary[2:]) == set("undeuxvingt ")
    source_ids, target_ids = tp.encode_pairs(pairs, source, target)
    assert target_ids[0][0] == tp.START and target_ids[0][-1] == tp.END
    assert len(target_ids[2]) == len("vingt et un") + 2
    assert len(source_ids[2]) == 3  # twenty - one
    text = target.text(tf.constant([target_ids[2][1:]])).numpy()[0].decode()
    assert text == "vingt et un"
    assert source.ids(tf.constant(["one zebra"])).to_list() == [[source.vocabulary.index("one")
                                                                 + 2, tp.UNK]]


def test_encode_pairs_drops_pairs_longer_than_max_length():
    pairs = [("a b c", "x"), ("a", "x y z w"), ("a b", "x y")]
    source, target = tp.build_tokenizers(pairs, (10, 10), ("word", "word"), False)
    kept_source, _ = tp.encode_pairs(pairs, source, target, max_length=2)
    assert len(kept_source) == 1


# --- split and batches --------------------------------------------------------------------------


def test_split_is_fixed_and_keeps_a_source_sentence_in_one_split():
    pairs = [(f"s{i % 300}", f"t{i}") for i in range(1000)]  # each source 3 or 4 times
    train, validation, test = tp.split_pairs(pairs, 0.1, 100)
    assert (train, validation, test) == tp.split_pairs(pairs, 0.1, 100)
    assert len(train) + len(validation) + len(test) == 1000
    assert 100 <= len(test) < 105 and 100 <= len(validation) < 105
    sources = [{s for s, _ in split} for split in (train, validation, test)]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert tp.split_pairs(pairs, 0.1, 100, seed=1)[2] != test
    with pytest.raises(DataError, match="too few"):
        tp.split_pairs(pairs[:10], 5, 5)


def test_batches_are_bucketed_padded_and_shifted_for_teacher_forcing():
    rng = np.random.default_rng(0)
    sources = [rng.integers(4, 50, size=rng.integers(1, 30)).astype("int32") for _ in range(500)]
    targets = [np.concatenate([[tp.START], rng.integers(4, 50, size=rng.integers(1, 30)),
                               [tp.END]]).astype("int32") for _ in range(500)]
    data = tp.batches(sources, targets, 32, shuffle=True)
    batches = list(data)
    assert int(data.cardinality()) == len(batches)
    assert sum(int(s.shape[0]) for (s, _), _ in batches) == 500
    for (source, target_in), target_out in batches:
        assert source.shape[0] <= 32 and target_in.shape == target_out.shape
        lengths = np.maximum((source.numpy() != 0).sum(1), (target_in.numpy() != 0).sum(1) + 1)
        assert lengths.max() - lengths.min() < tp.BUCKET_WIDTH  # similar lengths together
        assert np.all(target_in.numpy()[:, 0] == tp.START)
        np.testing.assert_array_equal(target_in.numpy()[:, 1:], target_out.numpy()[:, :-1])


# --- the generated corpus -------------------------------------------------------------------------


def test_generated_corpus_is_real_language_data_in_every_direction():
    assert number_corpus.render_number(97, "fr") == "quatre-vingt-dix-sept"
    assert number_corpus.render_number(97, "de") == "siebenundneunzig"
    assert number_corpus.render_number(71, "es") == "setenta y uno"
    import datetime

    day = datetime.date(2018, 5, 9)
    assert number_corpus.render_date(day, "en", "full") == "Wednesday, May 9, 2018"
    assert number_corpus.render_date(day, "fr", "full") == "mercredi 9 mai 2018"
    assert number_corpus.render_date(day, "de", "long") == "9. Mai 2018"
    en_fr = number_corpus.generate("en-fr", 2000)
    assert len(set(en_fr)) == 2000 and en_fr == number_corpus.generate("en-fr", 2000)
    fr_en = number_corpus.generate("fr-en", 2000)
    assert [(t, s) for s, t in fr_en] == en_fr  # the reverse direction is the same corpus
    de = dict(number_corpus.generate("en-de", 500))
    assert any("tausend" in t for t in de.values()) and any("Mai" in t for t in de.values())
    numbers = [s for s, _ in en_fr if "," not in s or "thousand" in s]
    assert any("thousand" in s for s in numbers) and any(len(s.split()) == 1 for s in numbers)
    assert number_corpus.token_split("de") == "character"
    with pytest.raises(DataError, match="choose from"):
        number_corpus.generate("en-xx", 10)


def test_batches_split_evenly_between_replicas():
    rng = np.random.default_rng(1)
    sources = [np.arange(4, 4 + rng.integers(1, 20), dtype="int32") for _ in range(301)]
    targets = [np.arange(2, 4 + rng.integers(1, 20), dtype="int32") for _ in range(301)]
    data = tp.batches(sources, targets, 64, multiple_of=2)
    sizes = [int(s.shape[0]) for (s, _), _ in data]
    assert all(size % 2 == 0 and size > 0 for size in sizes)
    assert int(data.cardinality()) == len(sizes) and 301 - len(sizes) < sum(sizes) <= 300
