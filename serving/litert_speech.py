"""Reads spoken digits from WAV files with a `.tflite` speech model, LiteRT and numpy only (no
TensorFlow): what a phone app does.

    python -m serving.litert_speech saved_models/speech/1/assets.extra/speech_int8.tflite a.wav

The model's `classify` signature takes one recording's log-mel frames and how many of them hold
the recording (int32; the model makes its mask from it). They are computed here by
`pipelines.wav`, the numpy twin of what the SavedModel computes in its graph. A recording with
several digits is cut at its pauses and each stretch read as one digit.
`python -m serving.litert` does the same when the model's litert.json says `wav_log_mel`.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from pipelines import DataError, wav
from serving.litert import LiteRTModel, SignatureRunner

SIGNATURE = "classify"


def open_signature(model: Path | bytes, threads: int = 1,
                   signature: str = SIGNATURE) -> SignatureRunner:
    """The model's `classify` signature. XNNPACK, LiteRT's default CPU delegate, fails to
    prepare the unrolled int8 LSTM ("failed to create XNNPACK runtime"); such a model runs on
    the builtin kernels instead."""
    try:
        runner = LiteRTModel(model, threads=threads).signature(signature)
        runner(**blank_inputs(runner))  # XNNPACK prepares on the first call
    except RuntimeError:
        runner = LiteRTModel(model, threads=threads, xnnpack=False).signature(signature)
    return runner


def blank_inputs(runner: SignatureRunner) -> dict[str, np.ndarray]:
    return {name: np.ones(details["shape"], np.float32 if name == "features" else np.int32)
            for name, details in runner.input_details.items()}


def classify(runner: SignatureRunner, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """{"features": [N, 61, 40], "frames": int32 [N]} -> probabilities [N, 10], one call each
    (the signature has a fixed batch of 1)."""
    rows = [runner(features=inputs["features"][i : i + 1], frames=inputs["frames"][i : i + 1])
            ["probabilities"][0] for i in range(len(inputs["frames"]))]
    return np.stack(rows) if rows else np.zeros((0, 10), np.float32)


def read_recording(runner: SignatureRunner, samples: np.ndarray,
                   labels: list[str]) -> tuple[str, list[float]]:
    """One recording (8 kHz) -> the digits spoken in it and a confidence for each. Without a
    pause it is read whole, as the SavedModel reads it."""
    pieces = wav.split_at_pauses(samples)
    probabilities = classify(runner, wav.model_inputs(pieces if len(pieces) > 1 else [samples]))
    return ("".join(labels[i] for i in probabilities.argmax(axis=1)),
            [float(p) for p in probabilities.max(axis=1)])


def read_files(runner: SignatureRunner, files: list[Path], labels: list[str]) -> list[dict]:
    recordings = [wav.read_wav(path) for path in files]  # all checked up front
    results = []
    for path, samples in zip(files, recordings):
        text, confidences = read_recording(runner, samples, labels)
        results.append({"file": str(path), "text": text, "confidences": confidences})
    return results


def lines(runner: SignatureRunner, config: dict, files: list[Path], labels: list[str]) -> list[str]:
    """`serving.litert`'s preprocessor for litert.json's "wav_log_mel"."""
    labels = labels or [str(digit) for digit in range(10)]
    return [f"{r['file']}: {r['text']}  [{' '.join(f'{c:.2f}' for c in r['confidences'])}]"
            for r in read_files(runner, files, labels)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.litert_speech",
        description="Read spoken digits from WAV files with a .tflite speech model"
                    " (no TensorFlow).")
    parser.add_argument("model", type=Path, help="speech_float32.tflite or speech_int8.tflite")
    parser.add_argument("files", type=Path, nargs="+", metavar="WAV")
    parser.add_argument("--threads", type=int, default=1, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        if not args.model.is_file():
            raise DataError(f"{args.model}: no such file")
        labels_path = args.model.parent / "labels.txt"
        labels = (labels_path.read_text().split("\n")[:-1] if labels_path.is_file()
                  else [str(digit) for digit in range(10)])
        try:
            runner = open_signature(args.model, args.threads)
        except ValueError as error:
            raise DataError(f"{args.model}: not a LiteRT model ({error})") from None
        for line in lines(runner, {}, args.files, labels):
            print(line)
    except (DataError, KeyError) as error:
        print(f"error: {str(error).strip(chr(39))}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
