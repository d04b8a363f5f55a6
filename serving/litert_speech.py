"""Reads spoken digits from WAV files with a `.tflite` speech model, LiteRT and numpy only (no
TensorFlow): what a phone app does.

    python -m serving.litert_speech saved_models/speech/1/assets.extra/speech_int8.tflite a.wav

The model's `classify` signature takes one recording's log-mel frames and how many of them hold
the recording (int32; the model makes its mask from it). They are computed by `pipelines.wav`,
the numpy twin of what the SavedModel computes in its graph. A recording with several digits is
cut at its pauses and each stretch read as one digit (`serving.litert.read_spoken_digits`, which
`python -m serving.litert` uses too when the model's litert.json says `wav_log_mel`).
"""

from pathlib import Path

from serving import litert
from serving.litert import SignatureRunner

SIGNATURE = "classify"


def open_signature(model: Path | bytes, threads: int = 1,
                   signature: str = SIGNATURE) -> SignatureRunner:
    """The model's `classify` signature, on the builtin kernels where XNNPACK cannot prepare it
    (the unrolled int8 LSTM)."""
    return litert.open_signature(model, signature, threads)


def main(argv=None) -> None:
    """`python -m serving.litert`'s command line, the inputs read as WAV files whether or not a
    litert.json lies beside the model."""
    litert.main(argv, prog="python -m serving.litert_speech", preprocess="wav_log_mel",
                description="Read spoken digits from WAV files with a .tflite speech model (no "
                            "TensorFlow).")


if __name__ == "__main__":
    main()
