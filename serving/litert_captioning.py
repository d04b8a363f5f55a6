"""Image captioning on LiteRT with numpy only, no TensorFlow: the phone's situation.

    python -m serving.litert_captioning \
        saved_models/captioning/1/assets.extra/captioning_float32.tflite photo.png

A captioner `.tflite` (written by `apps.captioning export`) has two signatures with a fixed batch
of 1 (what keeps the LSTM in builtin ops):

    encode(image uint8 [1, S, S, 3])  -> memory [1, R, U], keys [1, R, U], region_mask [1, R],
                                         state_0 (h), state_1 (c)
    decode_step(token int32 [1], memory, keys, region_mask, state_0, state_1)
                                      -> log_probs [1, vocab], attention [1, R], state_0, state_1

A photo captioner (`--encoder mobilenet_v2`) comes as two files: `litert.json` names a
full-integer int8 encoder, `encode_image(pixels [1, 224, 224, 3] in 0..255) -> regions [1, 49,
1280]` (int8 in and out, (de)quantised by `serving.litert`), and the decoder file's `encode`
takes those regions instead of the image.

The greedy decoding loop runs here: encode once, then feed each predicted token back until
`[end]`. `litert.json` beside the model gives the image size, the special ids, the longest caption
and the vocabulary file. Images are decoded with Pillow and resized by `resize`, numpy's copy of
the SavedModel's `tf.image.resize(..., antialias=True)`, bit for bit: the model sees the same
pixels on a phone as in the graph (`tests/test_captioning.py` checks it on the scenes and on
Flickr8k's photos).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines import DataError
from serving.litert import LiteRTModel


def spans(output_size: int, input_size: int) -> tuple[list[int], list[np.ndarray]]:
    """Where each output pixel reads along one axis, and with what weights: TensorFlow's
    ScaleAndTranslate (triangle kernel, antialiased) computed in the same float32 steps."""
    f32 = np.float32
    inverse_scale = f32(1.0 / np.float64(f32(output_size) / f32(input_size)))
    kernel_scale = max(inverse_scale, f32(1.0))  # wider when shrinking: the antialiasing
    one_over_kernel_scale = f32(1.0) / kernel_scale
    starts, weights = [], []
    for x in range(output_size):
        sample = f32(x + 0.5) * inverse_scale
        start = min(max(int(np.ceil(sample - kernel_scale - f32(0.5))), 0), input_size - 1)
        end = min(max(int(np.floor(sample + kernel_scale - f32(0.5))), 0), input_size - 1) + 1
        distance = np.abs((f32(np.arange(start, end)) + f32(0.5) - sample)
                          * one_over_kernel_scale)
        w = np.where(distance < 1, f32(1.0) - distance, f32(0.0)).astype(f32)
        total = f32(0.0)
        for value in w:  # summed in order, as TensorFlow does
            total = total + value
        starts.append(start)
        weights.append(w * (f32(1.0) / total))
    return starts, weights


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size, size, C], equal to `tf.image.resize(image, [size, size],
    antialias=True)` rounded half to even and clipped (`pipelines.captions.resize`): rows first,
    then columns, each output a float32 sum in the same order."""
    pixels = image.astype(np.float32)
    for axis in (0, 1):
        starts, weights = spans(size, pixels.shape[axis])
        moved = np.moveaxis(pixels, axis, 0)
        out = np.zeros((size, *moved.shape[1:]), np.float32)
        for i, (start, w) in enumerate(zip(starts, weights)):
            for j, weight in enumerate(w):
                out[i] = out[i] + weight * moved[start + j]
        pixels = np.moveaxis(out, 0, axis)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def read_image(path: Path, size: int) -> np.ndarray:
    """An image file -> uint8 [size, size, 3], the pixels the SavedModel's graph gives its bytes
    (`pipelines.captions.decode_image`): Pillow decodes JPEG with the accurate integer DCT and
    drops an alpha channel, as the graph does; of 16-bit grey the graph keeps the high byte."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):
                grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
                pixels = np.repeat(grey[..., None], 3, axis=2)
            else:
                pixels = np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable image ({error})") from None
    return resize(pixels, size)


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
        self.encode_image = None  # a photo captioner's int8 MobileNetV2, when it has one
        if self.config.get("encoder"):
            self.encode_image = LiteRTModel(model_path.parent / self.config["encoder"],
                                            threads=threads).signature("encode_image")

    def read_image(self, path: Path) -> np.ndarray:
        return read_image(path, self.size)

    def _encode(self, image: np.ndarray) -> tuple[dict, dict]:
        """uint8 [S, S, 3] -> (what every step reads: memory, keys, mask; the first state)."""
        if self.encode_image is not None:
            regions = self.encode_image(pixels=image[None].astype(np.float32))["regions"]
            encoded = self.encode(regions=regions)
        else:
            encoded = self.encode(image=image[None].astype(np.uint8))
        return ({name: encoded[name] for name in ("memory", "keys", "region_mask")},
                {name: encoded[name] for name in ("state_0", "state_1")})

    def greedy_ids(self, image: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
        """uint8 [S, S, 3] -> token ids up to and including [end], and each step's attention."""
        memory, state = self._encode(image)
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

    def beam_ids(self, image: np.ndarray, beam_width: int, alpha: float) -> list[int]:
        """The best hypothesis of `layers.beam_search` (GNMT length penalty `alpha`), one
        decode_step call per running hypothesis and word: the k best extensions are kept,
        ending or not; one that ends is ranked by log P / ((5 + length) / 6) ** alpha; the
        search stops when no running hypothesis can still beat the k-th finished one."""
        if beam_width <= 1:
            return self.greedy_ids(image)[0]
        memory, state = self._encode(image)
        limit = self.config["max_length"]

        def penalty(length):
            return ((5.0 + length) / 6.0) ** alpha

        alive = [([], 0.0, state)]  # (tokens, log-probability, state)
        done: list[tuple[float, list[int]]] = []  # (score, tokens), best first
        for t in range(limit):
            candidates = []
            for tokens, log_prob, hypothesis_state in alive:
                token = tokens[-1] if tokens else self.ids["start"]
                result = self.step(token=np.array([token], np.int32), **memory,
                                   **hypothesis_state)
                new_state = {name: result[name] for name in hypothesis_state}
                scores = log_prob + result["log_probs"][0].astype(np.float64)
                for word in np.argsort(-scores, kind="stable")[:beam_width]:
                    candidates.append((scores[word], tokens + [int(word)], new_state))
            candidates.sort(key=lambda c: -c[0])
            alive = []
            for log_prob, tokens, new_state in candidates[:beam_width]:
                if tokens[-1] == self.ids["end"] or t + 1 >= limit:
                    done.append((log_prob / penalty(t + 1), tokens))
                else:
                    alive.append((tokens, log_prob, new_state))
            done = sorted(done, key=lambda d: -d[0])[:beam_width]
            worst_kept = done[-1][0] if len(done) == beam_width else -np.inf
            if not alive or max(a[1] for a in alive) / penalty(limit) <= worst_kept:
                break
        return done[0][1]

    def text(self, ids: list[int]) -> str:
        hidden = {self.ids["pad"], self.ids["start"], self.ids["end"]}
        return " ".join(self.vocab[i] for i in ids if i not in hidden)

    def caption(self, image: np.ndarray, beam_width: int = 1, alpha: float = 0.0) -> str:
        return self.text(self.beam_ids(image, beam_width, alpha))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.litert_captioning",
        description="Caption images with a captioner .tflite (LiteRT, no TensorFlow).")
    parser.add_argument("model", type=Path, help="captioning_*.tflite with litert.json beside it")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--beam-width", type=int, default=None,
                        help="default: the export's (litert.json), else 1 (greedy)")
    parser.add_argument("--alpha", type=float, default=None, help="length penalty exponent")
    args = parser.parse_args(argv)
    try:
        if not (args.model.is_file() and (args.model.parent / "litert.json").is_file()):
            raise DataError(f"{args.model}: no such model, or no litert.json beside it")
        captioner = CaptionLiteRT(args.model)
        width = args.beam_width or captioner.config.get("beam_width", 1)
        alpha = args.alpha if args.alpha is not None else captioner.config.get("alpha", 0.0)
        for path in args.images:
            print(f"{path}: {captioner.caption(captioner.read_image(path), width, alpha)}")
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
