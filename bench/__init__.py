"""Benchmarks: each prints a table and writes JSON under bench/results/ (git-ignored)."""

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def save_results(name: str, payload: dict) -> Path:
    """bench/results/<name>-<timestamp>.json, with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "machine": {"python": platform.python_version(), "processor": platform.machine(),
                           "cores": os.cpu_count()},
               **payload}
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"JSON: {path}")
    return path


def short_lenet_export(workdir: Path) -> tuple[Path, bytes, np.ndarray]:
    """A LeNet-5 trained for a few epochs on the embedded digits and exported under `workdir`:
    (SavedModel version directory, one test digit as PNG bytes, the same digit as model input)."""
    from PIL import Image

    from apps import digit_ocr
    from pipelines import images

    digit_ocr.train(digit_ocr.TrainConfig(epochs=5, run_dir=workdir / "run", verbose=0))
    report = digit_ocr.export(workdir / "run", workdir / "saved_models", quiet=True)
    frame, _ = next(iter(images.load_digits().test))
    png = workdir / "digit.png"
    Image.fromarray(255 - frame.numpy()[..., 0]).resize((56, 56)).save(png)
    pixels = images.to_model_input(frame.numpy()[None]).numpy()
    return Path(report["saved_model"]), png.read_bytes(), pixels
