"""The TensorFlow-Serving-compatible REST server, run for real in a subprocess on 127.0.0.1."""

import base64
import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import images
from serving.server import Batcher

PROJECT = Path(__file__).resolve().parents[1]
BODY_CAP_MB = 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url, body=None, raw: bytes | None = None):
    """(status, JSON body) of a GET, or of a POST of `body` as JSON (or of `raw` bytes)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class Server:
    def __init__(self, base: Path, *options: str):
        self.base = base
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = base.parent / f"server-{self.url.rsplit(':', 1)[1]}.log"
        command = [sys.executable, "-m", "serving.server", "--model-base", str(base),
                   "--port", self.url.rsplit(":", 1)[1], "--poll-seconds", "0.3",
                   "--max-body-mb", str(BODY_CAP_MB), "--log-level", "info", *options]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=PROJECT, stdout=log, stderr=log)
        deadline = time.monotonic() + 90
        while True:
            try:
                if call(f"{self.url}/v1/models/digit_ocr")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def model_base(exported, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    shutil.copytree(exported[0] / "digit_ocr", base / "digit_ocr")
    return base


@pytest.fixture(scope="module")
def server(model_base):
    running = Server(model_base)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def in_process(model_base):
    return tf.saved_model.load(str(model_base / "digit_ocr" / "1"))


@pytest.fixture(scope="module")
def test_pixels(digits):
    return images.labelled_arrays(digits.test.take(8))[0]


@pytest.fixture(scope="module")
def png_bytes(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("png")
    encoded = []
    for i, (frame, _) in enumerate(digits.test.take(6)):
        path = folder / f"{i}.png"
        Image.fromarray(255 - frame.numpy()[..., 0]).resize((56, 56)).save(path)
        encoded.append(path.read_bytes())
    return encoded


# --- status and metadata ----------------------------------------------------------------------


def test_status_has_tf_servings_shape(server):
    expected = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}
    assert call(f"{server.url}/v1/models/digit_ocr") == (200, expected)
    assert call(f"{server.url}/v1/models/digit_ocr/versions/1") == (200, expected)


def test_metadata_lists_the_signature_defs(server):
    status, body = call(f"{server.url}/v1/models/digit_ocr/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "digit_ocr", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    images_input = signatures["serving_default"]["inputs"]["images"]
    assert images_input["dtype"] == "DT_STRING"
    pixels = signatures["predict_pixels"]["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in pixels["tensor_shape"]["dim"]] == ["-1", "32", "32", "1"]
    assert set(signatures["serving_default"]["outputs"]) == {"digit", "probabilities"}
    assert signatures["predict_pixels"]["method_name"] == "tensorflow/serving/predict"


# --- predict ----------------------------------------------------------------------------------


def test_row_and_columnar_predictions_equal_the_in_process_model(server, in_process, test_pixels):
    expected = in_process.signatures["predict_pixels"](pixels=tf.constant(test_pixels))
    url = f"{server.url}/v1/models/digit_ocr:predict"
    status, rows = call(url, {"signature_name": "predict_pixels",
                              "instances": test_pixels.tolist()})
    assert status == 200
    assert [row["digit"] for row in rows["predictions"]] == expected["digit"].numpy().tolist()
    np.testing.assert_allclose([row["probabilities"] for row in rows["predictions"]],
                               expected["probabilities"].numpy(), atol=1e-6)
    status, columns = call(f"{server.url}/v1/models/digit_ocr/versions/1:predict",
                           {"signature_name": "predict_pixels",
                            "inputs": {"pixels": test_pixels.tolist()}})
    assert status == 200
    np.testing.assert_allclose(columns["outputs"]["probabilities"],
                               expected["probabilities"].numpy(), atol=1e-6)
    assert columns["outputs"]["digit"] == expected["digit"].numpy().tolist()


def test_b64_png_bytes_through_serving_default(server, in_process, png_bytes):
    expected = in_process.signatures["serving_default"](images=tf.constant(png_bytes))
    encoded = [{"b64": base64.b64encode(b).decode()} for b in png_bytes]
    url = f"{server.url}/v1/models/digit_ocr:predict"
    status, rows = call(url, {"instances": encoded})
    assert status == 200
    np.testing.assert_allclose([r["probabilities"] for r in rows["predictions"]],
                               expected["probabilities"].numpy(), atol=1e-6)
    status, columns = call(url, {"inputs": encoded})  # columnar, bare value for the one input
    assert status == 200
    assert columns["outputs"]["digit"] == expected["digit"].numpy().tolist()


# --- errors -----------------------------------------------------------------------------------


def test_every_error_case_has_its_status_and_an_error_body(server, test_pixels):
    url = f"{server.url}/v1/models/digit_ocr:predict"
    pixels = test_pixels[:1].tolist()
    cases = [
        (400, url, None, b"{not json"),
        (400, url, {"signature_name": "predict_pixels", "instances": [[[1.0, 2.0]]]}, None),
        (400, url, {"signature_name": "predict_pixels", "instances": [[["a"] * 32] * 32]}, None),
        (400, url, {"signature_name": "predict_pixels", "inputs": {"pixel": pixels}}, None),
        (400, url, {"signature_name": "predict_pixels", "instances": pixels, "inputs": pixels},
         None),
        (400, url, {"instances": [1, 2]}, None),  # numbers where image bytes are expected
        (400, url, {"instances": [{"b64": "bm90IGFuIGltYWdl"}]}, None),  # bytes, not an image
        (404, f"{server.url}/v1/models/no_such_model:predict", {"instances": pixels}, None),
        (404, f"{server.url}/v1/models/digit_ocr/versions/7:predict", {"instances": pixels}, None),
        (404, f"{server.url}/v1/models/digit_ocr/labels/stable:predict", {"instances": pixels},
         None),
        (404, url, {"signature_name": "nope", "instances": pixels}, None),
        (404, f"{server.url}/v1/models/digit_ocr/versions/7", None, None),
        (404, f"{server.url}/v1/models/..%2F..%2Fetc", None, None),
        (404, f"{server.url}/v1/models/%2E%2E/versions/1", None, None),
    ]
    for expected_status, target, body, raw in cases:
        status, answer = call(target, body, raw)
        assert status == expected_status, (target, body, answer)
        assert set(answer) == {"error"} and answer["error"], answer


def test_body_over_the_cap_gets_413_before_it_is_read(server):
    # Only the headers and the start of the body are sent: the server must answer from the
    # declared length, not after swallowing megabytes (or a client that never stops).
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]),
                                            timeout=30)
    connection.putrequest("POST", "/v1/models/digit_ocr:predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(BODY_CAP_MB * 2**20 + 10))
    connection.endheaders()
    try:
        connection.send(b'{"instances": [' + b" " * 4096)
    except OSError:
        pass  # the server may already have answered and closed
    response = connection.getresponse()
    assert response.status == 413
    assert "error" in json.loads(response.read())
    connection.close()


def test_keeps_answering_after_a_burst_of_malformed_requests(server, test_pixels, in_process):
    url = f"{server.url}/v1/models/digit_ocr:predict"
    garbage = [b"", b"[]", b"null", b"{\"instances\": {}}", b"\xff\xfe", b"{\"inputs\": [[[[",
               json.dumps({"signature_name": "predict_pixels",
                           "instances": [[[[float("nan")]]]]}).encode()]
    for _ in range(10):
        for raw in garbage:
            status, answer = call(url, raw=raw)
            assert 400 <= status < 500 and "error" in answer
    status, rows = call(url, {"signature_name": "predict_pixels",
                              "instances": test_pixels[:2].tolist()})
    expected = in_process.signatures["predict_pixels"](pixels=tf.constant(test_pixels[:2]))
    assert status == 200
    assert [r["digit"] for r in rows["predictions"]] == expected["digit"].numpy().tolist()


# --- versions, monitoring ---------------------------------------------------------------------


def test_new_version_is_served_and_incomplete_ones_skipped(server, model_base):
    half = model_base / "digit_ocr" / "5"
    half.mkdir()
    (half / "saved_model.pb").write_bytes(b"")  # no variables/: not a complete SavedModel
    shutil.copytree(model_base / "digit_ocr" / "1", model_base / "digit_ocr" / "3")
    deadline = time.monotonic() + 20
    while True:
        status, body = call(f"{server.url}/v1/models/digit_ocr/metadata")
        if body["model_spec"]["version"] == "3":
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
    status, body = call(f"{server.url}/v1/models/digit_ocr")
    states = {v["version"]: v["state"] for v in body["model_version_status"]}
    assert states == {"3": "AVAILABLE", "1": "END"}
    assert "skipping" in server.log.read_text() and "digit_ocr/5" in server.log.read_text()


def test_prometheus_metrics_count_requests(server):
    with urllib.request.urlopen(f"{server.url}/monitoring/prometheus/metrics") as response:
        text = response.read().decode()
    ok = [line for line in text.splitlines()
          if line.startswith(":tensorflow:serving:request_count_total")
          and 'model_name="digit_ocr"' in line and 'status="OK"' in line]
    assert ok and float(ok[0].split()[-1]) >= 3
    assert ":tensorflow:serving:request_latency_bucket" in text


def test_binds_to_loopback_by_default(server):
    assert "running on http://127.0.0.1:" in server.log.read_text()


# --- batching ---------------------------------------------------------------------------------


def test_batcher_merges_concurrent_calls_and_returns_each_its_rows():
    calls = []

    def double(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2}

    batcher = Batcher(double, max_batch_size=64, timeout_ms=100)
    results = {}

    def client(i):
        results[i] = batcher({"x": np.full((i % 3 + 1, 2), i, dtype=np.float32)})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, outputs in results.items():
        np.testing.assert_array_equal(outputs["y"], np.full((i % 3 + 1, 2), 2 * i))
    assert len(calls) < 12 and sum(calls) == sum(i % 3 + 1 for i in range(12))


def test_batching_server_answers_concurrent_clients_correctly(model_base, test_pixels, in_process):
    expected = in_process.signatures["predict_pixels"](pixels=tf.constant(test_pixels))
    batching = Server(model_base, "--batching", "--batch-timeout-ms", "20")
    try:
        url = f"{batching.url}/v1/models/digit_ocr:predict"
        answers = {}

        def client(i):
            answers[i] = call(url, {"signature_name": "predict_pixels",
                                    "instances": test_pixels[i : i + 1].tolist()})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(test_pixels))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, (status, body) in answers.items():
            assert status == 200
            np.testing.assert_allclose(body["predictions"][0]["probabilities"],
                                       expected["probabilities"].numpy()[i], atol=1e-6)
    finally:
        batching.stop()
