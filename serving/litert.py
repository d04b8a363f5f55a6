"""Runs `.tflite` models with LiteRT (`ai_edge_litert`) and numpy only, no TensorFlow: the situation
on a phone. Integer-quantised inputs and outputs are (de)quantised here, so callers always deal in
floats.
"""

from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


class LiteRTModel:
    """One signature of a `.tflite` file, called with float numpy arrays by input name."""

    def __init__(self, model: bytes | str | Path, signature: str | None = None, threads: int = 1):
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.interpreter = Interpreter(model_content=content, num_threads=threads)
        signatures = self.interpreter.get_signature_list()
        self.signature = signature or next(iter(signatures))
        if self.signature not in signatures:
            raise KeyError(f"no signature {self.signature!r}; the model has {sorted(signatures)}")
        self.runner = self.interpreter.get_signature_runner(self.signature)
        self.input_details = self.runner.get_input_details()
        self.output_details = self.runner.get_output_details()

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feed = {name: _quantize(np.asarray(inputs[name]), self.input_details[name])
                for name in self.input_details}
        outputs = self.runner(**feed)
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
