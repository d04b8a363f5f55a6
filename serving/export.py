"""Publishing models: SavedModel versions laid out for TensorFlow Serving, and `.tflite` variants.

    saved_models/<app>/<version>/            a complete SavedModel, renamed into place at once
        saved_model.pb, variables/, assets/
        assets.extra/                        TF Serving's place for files the graph does not load:
            <app>_float32.tflite ...         so its version scan never trips over them
            labels.txt, tflite_report.json

A version directory is written under a temporary name inside the model's base directory (TF
Serving ignores names that are not integers) and renamed when complete, so a server polling the
base never loads half a model and a failed export leaves nothing behind (an export that was
killed does: the next export removes its directory, named after its process). `write_version` is the
whole export of an app: SavedModel, assets, each `.tflite` variant converted, written and run in
the LiteRT interpreter against Keras, and the report.
"""

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.startup_logs import quiet_startup

TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
EXTRA_DIR = "assets.extra"


def versions(model_base: Path) -> list[int]:
    if not model_base.is_dir():
        return []
    return sorted(int(p.name) for p in model_base.iterdir() if p.name.isdigit() and p.is_dir())


STAGING_PREFIX = ".incomplete-"  # then the writing process's id: ".incomplete-4242-x1y2z3"
STALE_STAGING_SECONDS = 3600  # for a directory whose name holds no process id


def remove_stale_staging(model_base: Path) -> None:
    """Removes what killed exports left (their rename never came): temporary directories whose
    process is gone. An export still running, in this process or another, keeps its own."""
    for staging in model_base.glob(STAGING_PREFIX + "*"):
        writer = staging.name[len(STAGING_PREFIX):].split("-")[0]
        if writer.isdigit():
            stale = not process_exists(int(writer))
        else:
            try:
                stale = staging.stat().st_mtime < time.time() - STALE_STAGING_SECONDS
            except FileNotFoundError:
                continue  # renamed or removed by another export meanwhile
        if stale and staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def publish(model_base: Path, write: Callable[[Path], None]) -> Path:
    """Calls `write(directory)` on a temporary directory, then renames it to the next version."""
    model_base.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_base)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=model_base))
    try:
        write(staging)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide it from a serving user
        while True:
            target = model_base / str((versions(model_base) or [0])[-1] + 1)
            try:
                os.rename(staging, target)  # atomic on one filesystem
                return target
            except OSError:
                if not target.exists():
                    raise  # a real failure, not a concurrent export taking the number
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def convert_to_tflite(
    saved_model_dir: Path,
    signature: str | Sequence[str],
    variant: str,
    representative_inputs: Iterable[np.ndarray] | None = None,
) -> bytes:
    """A SavedModel's signature (or several: a seq2seq model's `encode` and `decode_step`, kept
    under their names) as a `.tflite` flatbuffer, builtin ops only.

    - float32: as trained.
    - float16: weights stored as float16 (half the size), computed in float32.
    - dynamic: weights int8, activations quantised on the fly.
    - int8: everything int8 including inputs and outputs, calibrated on `representative_inputs`
      (arrays of batch 1, or {input name: array} for several inputs); what integer-only
      accelerators need.
    """
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; choose from {TFLITE_VARIANTS}")
    signatures = [signature] if isinstance(signature, str) else list(signature)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=signatures
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative_inputs is None:
            raise ValueError("int8 conversion needs representative inputs")
        # A dict sample feeds a signature with several inputs by name.
        converter.representative_dataset = lambda: (
            x if isinstance(x, dict) else [x] for x in representative_inputs
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with quiet_startup():  # the MLIR quantiser prints its settings on stderr
        return converter.convert()


@dataclass
class TFLiteFiles:
    """An export's `.tflite` variants, and how each one is checked."""

    stem: str  # files are assets.extra/<stem>_<variant>.tflite
    # The signature(s) each file holds; a dict gives each variant its own.
    signatures: str | Sequence[str] | dict[str, str]
    variants: Sequence[str] = TFLITE_VARIANTS
    # The file run in the LiteRT interpreter against Keras on held-out inputs -> its figures.
    check: Callable[[Path], dict] | None = None
    representative_inputs: Callable[[], Iterable] | None = None  # for int8
    # Converted from this archive (fixed shapes for phones) instead of the served SavedModel.
    archive: object | None = None  # keras.export.ExportArchive


def write_version(model_base: Path, archive, *, assets: dict | None = None,
                  tflite: TFLiteFiles | None = None, report: dict | None = None,
                  progress: bool = False) -> dict:
    """Publishes the next version under `model_base`: `archive` (a keras ExportArchive) as the
    SavedModel, `assets` into assets.extra/ (name -> str, bytes, a dict written as JSON, or a
    Path to copy), the `.tflite` variants with their figures, and tflite_report.json. Returns
    the report: `report` with a row per variant and "saved_model", the version's directory."""
    from tqdm import tqdm

    report = dict(report or {})

    def write(version_dir: Path) -> None:
        archive.write_out(str(version_dir), verbose=False)
        extra = version_dir / EXTRA_DIR
        extra.mkdir()
        for name, content in (assets or {}).items():
            if isinstance(content, Path):
                shutil.copy(content, extra / name)
            elif isinstance(content, dict):
                (extra / name).write_text(json.dumps(content, indent=2) + "\n")
            elif isinstance(content, bytes):
                (extra / name).write_bytes(content)
            else:
                (extra / name).write_text(content)
        if tflite is not None:
            with tempfile.TemporaryDirectory() as lite_dir:
                source = version_dir
                if tflite.archive is not None:
                    tflite.archive.write_out(lite_dir, verbose=False)
                    source = Path(lite_dir)
                for variant in tqdm(tflite.variants, desc="TFLite", disable=not progress):
                    inputs = tflite.representative_inputs() if variant == "int8" else None
                    signatures = (tflite.signatures[variant]
                                  if isinstance(tflite.signatures, dict) else tflite.signatures)
                    content = convert_to_tflite(source, signatures, variant, inputs)
                    path = extra / f"{tflite.stem}_{variant}.tflite"
                    path.write_bytes(content)
                    report[variant] = {"file": path.name, "bytes": len(content),
                                       **(tflite.check(path) if tflite.check else {})}
        (extra / "tflite_report.json").write_text(json.dumps(report, indent=2) + "\n")

    report["saved_model"] = str(publish(Path(model_base), write))
    return report


def variant_sizes(report: dict, variants: Sequence[str] = TFLITE_VARIANTS) -> str:
    """Sizes in KiB of an export's variants, "-" for those it has not: "245/124/66/-"."""
    return "/".join(f"{report[v]['bytes'] / 1024:.0f}" if v in report else "-"
                    for v in variants)
