"""Translation on LiteRT with numpy only, no TensorFlow: the phone's situation.

    python -m serving.litert_seq2seq \
        saved_models/translation/1/assets.extra/translation_float32.tflite "ninety-seven"

A sequence-to-sequence `.tflite` (written by `apps.translation export`) has two signatures with a
fixed batch of 1 and a static source length S (what keeps the RNN loops in builtin ops):

    encode(source int32 [1, S])  -> memory, keys, source_mask, state_0[, state_1]
    decode_step(token int32 [1], memory, keys, source_mask, state_0[, state_1])
                                 -> log_probs [1, vocab], attention [1, S], state_0[, state_1]

The decoding loop runs here: encode once, then feed each predicted token back until `[end]`.
The `litert.json` beside the model gives the special ids, the static length, the vocabulary
files and the standardisation rules, which `standardize` applies with Python's `re` exactly as
the training pipeline does with TensorFlow's regex ops (`pipelines/text_pairs.py`);
`Seq2SeqText` is that text side alone, without a model.
"""

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np

from pipelines import DataError
from serving.litert import LiteRTModel


class Seq2SeqText:
    """The text side of a translator export: litert.json's rules and the two vocabularies in
    `folder`, sentences to ids and ids to sentences (`pipelines.text_pairs`'s job in the graph)."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.config = json.loads((folder / "litert.json").read_text())
        read = lambda name: (folder / name).read_text(encoding="utf-8").split("\n")[:-1]  # noqa: E731
        self.source_vocab = ["", "[UNK]", *read(self.config["source_vocab"])]
        self.target_vocab = ["", "[UNK]", *read(self.config["target_vocab"])]
        self.source_index = {token: i for i, token in enumerate(self.source_vocab) if i > 1}
        self.ids = self.config["ids"]
        self.length = int(self.config.get("source_length", 0))

    def standardize(self, text: str, split: str = "word") -> str:
        rules = self.config["standardize"]
        text = unicodedata.normalize(rules["unicode"], text)
        if self.config["lowercase"]:
            text = text.lower()
        if split == "word":
            text = re.sub(rules["punctuation"], r" \1 ", text)
        return re.sub(rules["spaces"], " ", text).strip(" ")

    def token_ids(self, sentence: str) -> list[int]:
        """A raw sentence's source ids: NFC, standardised, split, looked up (UNK if unknown)."""
        text = self.standardize(sentence, self.config["source_split"])
        tokens = list(text) if self.config["source_split"] == "character" else [
            t for t in text.split(" ") if t]
        return [self.source_index.get(t, self.ids["unk"]) for t in tokens]

    def source_ids(self, sentence: str) -> np.ndarray:
        """int32 [1, S] padded with 0; a sentence longer than S tokens is an error, never cut."""
        tokens = self.token_ids(sentence)
        if len(tokens) > self.length:
            shown = sentence if len(sentence) <= 40 else sentence[:40] + "..."
            raise DataError(f"sentence {shown!r} has {len(tokens)} tokens, more than this"
                            f" model's static source length of {self.length} (export a model"
                            " trained with a larger --max-length)")
        ids = np.zeros([1, self.length], np.int32)
        ids[0, : len(tokens)] = tokens
        return ids

    def detokenize(self, ids: list[int]) -> str:
        hidden = {self.ids["pad"], self.ids["start"], self.ids["end"]}
        tokens = [self.target_vocab[i] for i in ids if i not in hidden]
        if self.config["target_split"] == "character":
            return "".join(tokens)
        rules = self.config["standardize"]
        text = " ".join(tokens)
        text = re.sub(rules["no_space_before"], r"\1", text)
        text = re.sub(rules["no_space_after"], r"\1", text)
        return text.replace(rules["glued"], "-")


class Seq2SeqLiteRT(Seq2SeqText):
    """A translator `.tflite` with its litert.json and vocabularies (same folder)."""

    def __init__(self, model_path: str | Path, threads: int = 1):
        super().__init__(Path(model_path).parent)
        model = LiteRTModel(model_path, threads=threads)
        self.encode = model.signature("encode")
        self.step = model.signature("decode_step")

    def greedy_ids(self, source_ids: np.ndarray, max_length: int | None = None) -> list[int]:
        """Greedy decoding: token ids up to and including [end], or as many as the translator
        allows a sentence of this length (twice its tokens and a margin, up to a maximum)."""
        if max_length is None:
            tokens = int(np.count_nonzero(source_ids))
            max_length = min(2 * (tokens + 1) + self.config["output_margin"],
                             self.config["max_output_length"])
        encoded = self.encode(source=source_ids)
        memory = {name: encoded[name] for name in ("memory", "keys", "source_mask")}
        state = {f"state_{i}": encoded[f"state_{i}"] for i in range(self.config["states"])}
        token, output = self.ids["start"], []
        while len(output) < max_length:
            result = self.step(token=np.array([token], np.int32), **memory, **state)
            token = int(np.argmax(result["log_probs"][0]))
            output.append(token)
            if token == self.ids["end"]:
                break
            state = {name: result[name] for name in state}
        return output

    def translate(self, sentence: str) -> str:
        return self.detokenize(self.greedy_ids(self.source_ids(sentence)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.litert_seq2seq",
        description="Translate sentences with a translator .tflite (LiteRT, no TensorFlow).",
    )
    parser.add_argument("model", type=Path, help="translation_*.tflite with litert.json beside it")
    parser.add_argument("sentences", nargs="+", metavar="SENTENCE")
    args = parser.parse_args(argv)
    try:
        if not (args.model.is_file() and (args.model.parent / "litert.json").is_file()):
            raise DataError(f"{args.model}: no such model, or no litert.json beside it")
        translator = Seq2SeqLiteRT(args.model)
        for sentence in args.sentences:
            print(translator.translate(sentence))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
