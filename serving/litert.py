"""Runs `.tflite` models with LiteRT (`ai_edge_litert`) and numpy only, no TensorFlow: the situation
on a phone.

    python -m serving.litert saved_models/digit_ocr/1/assets.extra/digit_ocr_int8.tflite code.png

As a library, a model is one interpreter with named signatures; each signature is called with
float numpy arrays by input name and returns floats by output name, integer-quantised tensors
being (de)quantised here. A seq2seq model runs its `encode` signature once and its
`decode_step` signature in a loop, both from one `LiteRTModel`:

    model = LiteRTModel("translator.tflite")
    encode, step = model.signature("encode"), model.signature("decode_step")

From the command line, a `litert.json` beside the model (written by the apps' `export`) says which
signature to run, how to turn the input files into tensors and where the labels are.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from serving.startup_logs import quiet_startup

with quiet_startup():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType


class LiteRTModel:
    """A `.tflite` file (path or bytes) loaded in the LiteRT interpreter. `xnnpack=False`: the
    builtin kernels only, for a model that LiteRT's default XNNPACK delegate fails to prepare."""

    def __init__(self, model: bytes | str | Path, threads: int = 1, xnnpack: bool = True):
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        options = {} if xnnpack else {
            "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        self.interpreter = Interpreter(model_content=content, num_threads=threads, **options)
        self.signature_names = list(self.interpreter.get_signature_list())

    def signature(self, name: str | None = None) -> "SignatureRunner":
        name = name or self.signature_names[0]
        if name not in self.signature_names:
            raise KeyError(f"no signature {name!r}; the model has {self.signature_names}")
        return SignatureRunner(self.interpreter.get_signature_runner(name))


def open_signature(model: bytes | str | Path, name: str | None = None,
                   threads: int = 1) -> "SignatureRunner":
    """The signature `name` (else the model's first), ready to call. XNNPACK, LiteRT's default
    CPU delegate, prepares a model on its first call and can fail there ("failed to create
    XNNPACK runtime", met on an unrolled int8 LSTM); such a model runs on the builtin kernels."""
    runner = LiteRTModel(model, threads=threads).signature(name)
    try:
        runner(**{input_name: np.ones(details["shape"], np.float32)
                  for input_name, details in runner.input_details.items()})
    except RuntimeError:
        runner = LiteRTModel(model, threads=threads, xnnpack=False).signature(name)
    return runner


class SignatureRunner:
    """One signature, called with float arrays by input name; returns floats by output name."""

    def __init__(self, runner):
        self.runner = runner
        self.input_details = runner.get_input_details()
        self.output_details = runner.get_output_details()
        self.called = False

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        missing = sorted(set(self.input_details) - set(inputs))
        if missing:
            takes = list(self.input_details)
            raise KeyError(f"missing inputs {missing}; the signature takes {takes}")
        feed = {name: _quantize(np.asarray(inputs[name]), details)
                for name, details in self.input_details.items()}
        if self.called:
            outputs = self.runner(**feed)
        else:  # the first call applies the XNNPACK delegate, which announces itself on stderr
            with quiet_startup():
                outputs = self.runner(**feed)
            self.called = True
        return {name: _dequantize(value, self.output_details[name])
                for name, value in outputs.items()}


def _quantize(values: np.ndarray, details: dict) -> np.ndarray:
    dtype = details["dtype"]
    scale, zero_point = details["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        limits = np.iinfo(dtype)
        values = np.round(values / scale + zero_point).clip(limits.min, limits.max)
    return values.astype(dtype)


def _dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    scale, zero_point = details["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values


# ---------------------------------------------------------------------------------------------
# Command line: what `litert.json` declares decides how input files become tensors
# ---------------------------------------------------------------------------------------------


def read_digits(runner: SignatureRunner, config: dict, picture: np.ndarray,
                labels: list[str]) -> tuple[str, list[float]]:
    """`mnist_digits`: the digits in a grey picture [H, W] and a confidence for each. A picture
    of one digit is framed whole, as the SavedModel does; a row of digits is cut into one crop
    per digit; each is framed the MNIST way."""
    from pipelines import digit_frames

    crops = digit_frames.digit_pictures(picture)
    if not crops:
        return "", []
    frames = np.stack([digit_frames.mnist_frame(crop[..., 0]) for crop in crops])
    probabilities = runner(**{config["input"]: digit_frames.model_input(frames)})
    probabilities = probabilities[config["output"]]
    return ("".join(labels[i] for i in probabilities.argmax(axis=1)),
            [float(p) for p in probabilities.max(axis=1)])


def read_digit_images(runner: SignatureRunner, config: dict, files: list[Path],
                      labels: list[str]) -> list[str]:
    from pipelines import digit_frames

    pictures = [digit_frames.read_grayscale(path) for path in files]  # all checked up front
    lines = []
    for path, picture in zip(files, pictures):
        text, confidences = read_digits(runner, config, picture, labels)
        shown = " ".join(f"{p:.2f}" for p in confidences)
        lines.append(f"{path}: {text}  [{shown}]" if text else f"{path}: (no digits found)")
    return lines


def read_arrays(runner: SignatureRunner, config: dict, files: list[Path],
                labels: list[str]) -> list[str]:
    """Without a declared preprocessing: each input is a `.npy` file holding a ready tensor."""
    lines = []
    for path in files:
        outputs = runner(**{config.get("input") or next(iter(runner.input_details)): np.load(path)})
        for name, value in outputs.items():
            summary = f"shape {list(value.shape)}"
            if labels and value.ndim == 2 and value.shape[1] == len(labels):
                summary = " ".join(labels[i] for i in value.argmax(axis=1))
            lines.append(f"{path}: {name} = {summary}")
    return lines


def digit_probabilities(runner: SignatureRunner, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """A speech model's `classify`: {"features": [N, 61, 40], "frames": int32 [N]} ->
    probabilities [N, 10], one call each (the signature has a fixed batch of 1)."""
    rows = [runner(features=inputs["features"][i : i + 1], frames=inputs["frames"][i : i + 1])
            ["probabilities"][0] for i in range(len(inputs["frames"]))]
    return np.stack(rows) if rows else np.zeros((0, 10), np.float32)


def read_recording(runner: SignatureRunner, samples: np.ndarray,
                   labels: list[str]) -> tuple[str, list[float]]:
    """One recording (8 kHz) -> the digits spoken in it and a confidence for each. Without a
    pause it is read whole, as the SavedModel reads it."""
    from pipelines import wav

    pieces = wav.split_at_pauses(samples)
    probabilities = digit_probabilities(
        runner, wav.model_inputs(pieces if len(pieces) > 1 else [samples]))
    return ("".join(labels[i] for i in probabilities.argmax(axis=1)),
            [float(p) for p in probabilities.max(axis=1)])


def read_wav_files(runner: SignatureRunner, files: list[Path], labels: list[str]) -> list[dict]:
    from pipelines import wav

    recordings = [wav.read_wav(path) for path in files]  # all checked up front
    results = []
    for path, samples in zip(files, recordings):
        text, confidences = read_recording(runner, samples, labels)
        results.append({"file": str(path), "text": text, "confidences": confidences})
    return results


def read_spoken_digits(runner: SignatureRunner, config: dict, files: list[Path],
                       labels: list[str]) -> list[str]:
    """`wav_log_mel`: WAV files of spoken digits, their log-mel frames computed by
    `pipelines.wav`, the numpy twin of the SavedModel's graph; a recording with several digits
    is cut at its pauses and each stretch read as one digit."""
    labels = labels or [str(digit) for digit in range(10)]
    return [f"{r['file']}: {r['text']}  [{' '.join(f'{c:.2f}' for c in r['confidences'])}]"
            for r in read_wav_files(runner, files, labels)]


PREPROCESSORS = {"mnist_digits": read_digit_images, "wav_log_mel": read_spoken_digits,
                 None: read_arrays}


def main(argv=None, prog: str = "python -m serving.litert", preprocess: str | None = None,
         description: str = "Run a .tflite model on input files with LiteRT (no TensorFlow "
                            "needed).") -> None:
    """The command line. `preprocess` (a key of PREPROCESSORS) decides how the input files are
    read whatever litert.json says: a runner for one kind of model passes its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("model", type=Path, help="a .tflite file (a litert.json beside it helps)")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="image files for image models, WAV files for speech, else .npy arrays")
    parser.add_argument("--signature", help="default: the one litert.json names, else the first")
    parser.add_argument("--threads", type=int, default=1, help="default: %(default)s")
    args = parser.parse_args(argv)

    from pipelines import DataError

    try:
        if not args.model.is_file():
            raise DataError(f"{args.model}: no such file")
        config_path = args.model.parent / "litert.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        labels_path = args.model.parent / config.get("labels", "labels.txt")
        labels = labels_path.read_text().split("\n")[:-1] if labels_path.is_file() else []
        try:
            runner = open_signature(args.model, args.signature or config.get("signature"),
                                    args.threads)
        except ValueError as error:
            raise DataError(f"{args.model}: not a LiteRT model ({error})") from None
        read = PREPROCESSORS[preprocess or config.get("preprocess")]
        for line in read(runner, config, args.inputs, labels):
            print(line)
    except (DataError, KeyError) as error:
        print(f"error: {str(error).strip(chr(39))}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
