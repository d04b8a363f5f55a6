"""Image captioning on LiteRT with numpy only, no TensorFlow: the phone's situation.

    python -m serving.litert_captioning \
        saved_models/captioning/1/assets.extra/captioning_float32.tflite photo.png

A captioner `.tflite` (written by `apps.captioning export`) has two signatures with a fixed batch
of 1 (what keeps the LSTM in builtin ops):

    encode(image uint8 [1, S, S, 3])  -> memory [1, R, U], keys [1, R, U], region_mask [1, R],
                                         state_0 (h), state_1 (c)
    decode_step(token int32 [1], memory, keys, region_mask, state_0, state_1)
                                      -> log_probs [1, vocab], attention [1, R], state_0, state_1

The greedy decoding loop runs here: encode once, then feed each predicted token back until
`[end]`. `litert.json` beside the model gives the image size, the special ids, the longest caption
and the vocabulary file. Images are resized with Pillow (the SavedModel resizes with TensorFlow,
so a photo not already S x S can differ by a rounding of some pixels).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines import DataError
from serving.litert import LiteRTModel


class CaptionLiteRT:
    """A captioner `.tflite` with its litert.json and vocabulary (same folder)."""

    def __init__(self, model_path: str | Path, threads: int = 1):
        model_path = Path(model_path)
        self.config = json.loads((model_path.parent / "litert.json").read_text())
        words = (model_path.parent / self.config["vocab"]).read_text(encoding="utf-8")
        self.vocab = ["", "[UNK]", *words.split("\n")[:-1]]
        self.ids = self.config["ids"]
        self.size = int(self.config["image_size"])
        model = LiteRTModel(model_path, threads=threads)
        self.encode = model.signature("encode")
        self.step = model.signature("decode_step")

    def read_image(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
                return np.asarray(image, np.uint8)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: unreadable image ({error})") from None

    def greedy_ids(self, image: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
        """uint8 [S, S, 3] -> token ids up to and including [end], and each step's attention."""
        encoded = self.encode(image=image[None].astype(np.uint8))
        memory = {name: encoded[name] for name in ("memory", "keys", "region_mask")}
        state = {name: encoded[name] for name in ("state_0", "state_1")}
        token, output, attention = self.ids["start"], [], []
        while len(output) < self.config["max_length"]:
            result = self.step(token=np.array([token], np.int32), **memory, **state)
            token = int(np.argmax(result["log_probs"][0]))
            output.append(token)
            attention.append(result["attention"][0])
            if token == self.ids["end"]:
                break
            state = {name: result[name] for name in state}
        return output, attention

    def text(self, ids: list[int]) -> str:
        hidden = {self.ids["pad"], self.ids["start"], self.ids["end"]}
        return " ".join(self.vocab[i] for i in ids if i not in hidden)

    def caption(self, image: np.ndarray) -> str:
        return self.text(self.greedy_ids(image)[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.litert_captioning",
        description="Caption images with a captioner .tflite (LiteRT, no TensorFlow).")
    parser.add_argument("model", type=Path, help="captioning_*.tflite with litert.json beside it")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    args = parser.parse_args(argv)
    try:
        if not (args.model.is_file() and (args.model.parent / "litert.json").is_file()):
            raise DataError(f"{args.model}: no such model, or no litert.json beside it")
        captioner = CaptionLiteRT(args.model)
        for path in args.images:
            print(f"{path}: {captioner.caption(captioner.read_image(path))}")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
