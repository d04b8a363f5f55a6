"""Scoring rows with the fraud detectors' `.tflite` files on LiteRT, numpy only: the phone's
situation.

`apps.fraud export` writes two files into the version's assets.extra/ (litert.json names the
signature each one runs):

    fraud_float32.tflite  serving_default: one float32 [batch] input per raw feature column,
                          named by `input_name`
    fraud_int8.tflite     score_standardized: features [batch, features], log-transformed and
                          standardised with schema.json's "scaling" (`standardize`)

Both return `score` (higher = more anomalous) and `is_anomaly` (score > the threshold baked in).

    scaling = json.loads(Path(".../assets.extra/schema.json").read_text())["scaling"]
    scores, flags = score_rows("fraud_int8.tflite", "score_standardized", rows, names, scaling)
"""

import re
from pathlib import Path

import numpy as np

from serving.litert import LiteRTModel

ROWS_PER_CALL = 1_024


def input_name(feature: str) -> str:
    """A feature column's name as a signature input name (letters, digits, '_', '.', '-')."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", feature)
    return name if name[:1].isalnum() else f"f_{name}"


def columns_of(features: np.ndarray, feature_names) -> dict[str, np.ndarray]:
    """Raw rows [rows, features] as `serving_default`'s inputs: one named column each."""
    return {input_name(f): np.ascontiguousarray(features[:, i], dtype="float32")
            for i, f in enumerate(feature_names)}


def standardize(features: np.ndarray, scaling: dict) -> np.ndarray:
    """What the detector does to raw rows before scoring, in numpy (a phone has no TF):
    `scaling` is schema.json's {"log_mask", "mean", "variance"}."""
    mask = np.asarray(scaling["log_mask"], bool)
    logged = np.where(mask, np.log1p(np.maximum(features, 0)), features)
    return ((logged - scaling["mean"]) / np.sqrt(scaling["variance"])).astype("float32")


def score_rows(tflite: bytes | str | Path, signature: str, features: np.ndarray, feature_names,
               scaling: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scores, flags) of raw rows [rows, features] by a `.tflite` file's `signature`
    (`serving_default` or `score_standardized`), ROWS_PER_CALL rows a call."""
    litert = LiteRTModel(tflite).signature(signature)
    scores, flags = [], []
    for start in range(0, len(features), ROWS_PER_CALL):
        rows = features[start : start + ROWS_PER_CALL]
        out = litert(**columns_of(rows, feature_names)) if signature == "serving_default" else \
            litert(features=standardize(rows, scaling))
        scores.append(out["score"])
        flags.append(out["is_anomaly"])
    return np.concatenate(scores), np.concatenate(flags).astype(bool)
