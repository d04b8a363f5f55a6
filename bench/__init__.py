"""Benchmarks: each prints a table and writes JSON under bench/results/ (git-ignored)."""

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def save_results(name: str, payload: dict) -> Path:
    """bench/results/<name>-<timestamp>.json, with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "machine": {"python": platform.python_version(), "processor": platform.machine(),
                           "cores": __import__("os").cpu_count()},
               **payload}
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
