"""Scaling out and surviving faults: step-level backups (atomic, damage detected), exact resume
after a SIGKILL, Keras' multi-worker fix, and two workers training on 127.0.0.1.

The per-app "MirroredStrategy equals one device" checks live in each app's test file."""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from apps import backup, digit_ocr, multiworker_fix, runner

PROJECT = Path(__file__).resolve().parents[1]
QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def weights_of(path: Path) -> list[np.ndarray]:
    return keras.models.load_model(path, compile=False).get_weights()


# --- backups ----------------------------------------------------------------------------------


def small_model():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_a_truncated_backup_is_detected_and_the_previous_one_is_used(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model = small_model()
    model.fit(x, x[:, :1], epochs=1, batch_size=8, verbose=0)
    backup.write_backup(tmp_path, model, backup.Position(1, 0, 4))
    kept = [w.copy() for w in model.get_weights()]
    model.fit(x, x[:, :1], epochs=1, batch_size=8, verbose=0)
    newest = backup.write_backup(tmp_path, model, backup.Position(2, 0, 8))
    data = (newest / "variables.npz").read_bytes()
    (newest / "variables.npz").write_bytes(data[: len(data) // 2])  # a disk that filled up

    fresh = small_model()
    position = backup.StepBackup(tmp_path).restore(fresh)
    assert position == backup.Position(1, 0, 4)
    assert "step-000000008 is damaged" in capsys.readouterr().out
    for restored, expected in zip(fresh.get_weights(), kept):
        np.testing.assert_array_equal(restored, expected)
    assert int(fresh.optimizer.iterations.numpy()) == 4  # the optimizer state came back too


def test_a_half_written_backup_is_never_loaded_and_only_two_are_kept(tmp_path):
    model = small_model()
    model.fit(np.zeros((8, 4)), np.zeros((8, 1)), verbose=0)
    for step in (1, 2, 3):
        backup.write_backup(tmp_path, model, backup.Position(0, step, step))
    (tmp_path / ".tmp-step-000000004-123").mkdir()  # a kill in the middle of writing
    assert [p.name for p in backup.backups(tmp_path)] == ["step-000000003", "step-000000002"]
    assert backup.latest_position(tmp_path).step == 3


def test_a_backup_of_another_model_is_refused_in_one_line(tmp_path):
    model = small_model()
    model.fit(np.zeros((8, 4)), np.zeros((8, 1)), verbose=0)
    backup.write_backup(tmp_path / "backup", model, backup.Position(0, 1, 1))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.compile("adam", "mse")
    with pytest.raises(runner.UsageError, match="different model; delete"):
        runner.fit(other, None, 1, tmp_path, steps_per_epoch=1)


# --- exact resume -----------------------------------------------------------------------------


def test_sigkill_at_a_random_step_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
    """Batch 16 on the embedded digits: 79 steps an epoch, Keras reports them 32 at a time."""
    command = [sys.executable, "-m", "apps.digit_ocr", "train", "--epochs", "3",
               "--batch-size", "16", "--backup-every", "1", "--verbose", "0", "--run-dir"]
    environment = {**os.environ, **QUIET, "TF_DETERMINISTIC_OPS": "1"}
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    subprocess.run(command + [str(uninterrupted)], cwd=PROJECT, env=environment, check=True,
                   capture_output=True, timeout=300)

    # Of 237 steps. The kill must land while the run is still going: on a loaded machine a poll
    # can miss the window (the run ends a second or two after its last backups), and then the
    # attempt starts over in a fresh directory, at most three times.
    attempts = []
    for _ in range(3):
        shutil.rmtree(resumed, ignore_errors=True)
        kill_after = random.Random().randint(20, 158)
        victim = subprocess.Popen(command + [str(resumed)], cwd=PROJECT, env=environment,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, seen = time.monotonic() + 240, []
        while victim.poll() is None and time.monotonic() < deadline:
            position = backup.latest_position(runner.backup_dir(resumed))
            if position and position.step >= kill_after:
                break
            if position and position.step not in seen:
                seen.append(position.step)
            time.sleep(0.01)
        if victim.poll() is None:
            break
        attempts.append(f"kill after {kill_after}: the run ended (status {victim.returncode})"
                        f" having shown backups at {seen}")
    else:
        pytest.fail("; ".join(attempts))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    position = backup.latest_position(runner.backup_dir(resumed))
    assert position.step < 237

    rerun = subprocess.run(command + [str(resumed)], cwd=PROJECT, env=environment,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{position.batch} batches in, step {position.step}" in rerun.stdout
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (uninterrupted, resumed)]
    assert metrics[0]["steps"] == metrics[1]["steps"] == 237
    for expected, restored in zip(weights_of(uninterrupted / "best.keras"),
                                  weights_of(resumed / "best.keras")):
        np.testing.assert_allclose(restored, expected, atol=1e-6)
    history = [runner.read_history(run) for run in (uninterrupted, resumed)]
    np.testing.assert_allclose(history[1]["loss"], history[0]["loss"], rtol=1e-5)
    assert not runner.backup_dir(resumed).exists()


# --- several workers --------------------------------------------------------------------------


def test_the_multiworker_fix_is_applied_where_keras_needs_it():
    assert multiworker_fix.needed() == (tuple(map(int, keras.__version__.split(".")[:2]))
                                        in multiworker_fix.KERAS_NEEDS_FIX)
    assert not multiworker_fix.needed("99.0.0")
    assert multiworker_fix.apply() == multiworker_fix.needed()
    assert multiworker_fix.applied() == multiworker_fix.needed()


RAW_KERAS_WORKER = """
import os, sys
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras, numpy as np
x = np.random.default_rng(0).random((128, 8)).astype("float32")
data = tf.data.Dataset.from_tensor_slices((x, (x.sum(1) > 4).astype("int32"))).batch(32)
with strategy.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(data, epochs=1, verbose=0)
"""


def test_keras_without_the_fix_fails_exactly_when_the_fix_says_it_is_needed(tmp_path):
    """Fails when Keras no longer needs the fix (delete apps/multiworker_fix.py) or when a Keras
    that the version check skips still needs it (add its version to KERAS_NEEDS_FIX)."""
    script = tmp_path / "worker.py"
    script.write_text(RAW_KERAS_WORKER)
    ports = free_ports(2)
    workers = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path,
                                env={**os.environ, **QUIET, "TF_CONFIG": tf_config(ports, i)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        codes = [worker.wait(timeout=120) for worker in workers]
    except subprocess.TimeoutExpired:  # one failed, the other waits for it forever
        codes = [None]
    finally:
        for worker in workers:
            worker.kill()
    plain_keras_works = codes == [0, 0]
    assert plain_keras_works != multiworker_fix.needed(), (
        "Keras fit under MultiWorkerMirroredStrategy "
        + ("works without apps/multiworker_fix.py: remove it" if plain_keras_works else
           "still fails on this Keras: add its version to multiworker_fix.KERAS_NEEDS_FIX"))


def test_two_workers_on_localhost_train_to_identical_weights(tmp_path):
    run_dir = tmp_path / "run"
    ports = free_ports(2)
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        environment = {**os.environ, **QUIET, "TF_CONFIG": tf_config(ports, index),
                       "TMPDIR": str(scratch)}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "apps.digit_ocr", "train", "--strategy", "multiworker",
             "--epochs", "3", "--batch-size", "32", "--run-dir", str(run_dir), "--verbose", "0"],
            cwd=PROJECT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    outcomes = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, errors) in zip(workers, outcomes):
        assert worker.returncode == 0, errors[-2000:]

    chief = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads((run_dir / "run.json").read_text())["replicas"] == 2
    assert chief["steps"] == 3 * 20  # 1,257 images in global batches of 2 x 32
    assert chief["test_accuracy"] > 0.8  # chance is 0.1
    # Only the chief writes the run directory; the other worker trains into its scratch space.
    other = next((tmp_path / "tmp1").rglob("worker-1"))
    assert not (run_dir / "worker-1").exists() and (other / "best.keras").is_file()
    for mine, theirs in zip(weights_of(run_dir / "best.keras"), weights_of(other / "best.keras")):
        np.testing.assert_array_equal(mine, theirs)


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path):
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    completed = subprocess.run(
        [sys.executable, "-m", "apps.digit_ocr", "train", "--strategy", "multiworker",
         "--run-dir", str(tmp_path)],
        cwd=PROJECT, env={**environment, **QUIET}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith(
        "error: --strategy multiworker needs TF_CONFIG")
    assert not any(tmp_path.iterdir())


def test_learning_rates_are_stated_per_replica_and_scaled_with_the_replicas():
    mirrored = runner.choose_strategy("mirrored")
    assert runner.scaled_learning_rate(1e-3, mirrored) == pytest.approx(2e-3)
    with mirrored.scope():
        model = digit_ocr.compile_model(digit_ocr.build_model("lenet5"), steps=100)
    schedule = model.optimizer._learning_rate  # the cosine decay, before its first step
    assert float(schedule(0)) == pytest.approx(2 * digit_ocr.LEARNING_RATE)


def test_jit_and_mixed_precision_do_not_break_a_cpu_run(tmp_path, capsys):
    digit_ocr.main(["train", "--epochs", "2", "--jit", "--mixed-precision", "--verbose", "0",
                    "--run-dir", str(tmp_path)])
    assert "--mixed-precision needs a GPU" in capsys.readouterr().err
    assert keras.mixed_precision.global_policy().name == "float32"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5 and metrics["steps"] == 2 * 20  # chance is 0.1
