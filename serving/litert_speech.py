"""Reads spoken digits from WAV files with a `.tflite` speech model, LiteRT and numpy only (no
TensorFlow): what a phone app does.

    python -m serving.litert_speech saved_models/speech/1/assets.extra/speech_int8.tflite a.wav

The model's `classify` signature takes one recording's log-mel frames and how many of them hold
the recording (int32; the model makes its mask from it). They are computed here by
`pipelines.wav`, the numpy twin of what the SavedModel computes in its graph. A recording with
several digits is cut at its pauses and each stretch read as one digit.
`python -m serving.litert` does the same when the model's litert.json says `wav_log_mel`.
"""

from pathlib import Path

import numpy as np

from pipelines import wav
from serving import litert
from serving.litert import SignatureRunner

SIGNATURE = "classify"


def open_signature(model: Path | bytes, threads: int = 1,
                   signature: str = SIGNATURE) -> SignatureRunner:
    """The model's `classify` signature, on the builtin kernels where XNNPACK cannot prepare it
    (the unrolled int8 LSTM)."""
    return litert.open_signature(model, signature, threads)


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
    """`python -m serving.litert`'s command line, the inputs read as WAV files whether or not a
    litert.json lies beside the model."""
    litert.main(argv, prog="python -m serving.litert_speech", preprocess="wav_log_mel",
                description="Read spoken digits from WAV files with a .tflite speech model (no "
                            "TensorFlow).")


if __name__ == "__main__":
    main()
