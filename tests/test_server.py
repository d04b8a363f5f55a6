"""The TensorFlow-Serving-compatible REST server, run for real in a subprocess on 127.0.0.1: over
the digit OCR export as a client sees it, then under hostile clients over a tiny SavedModel made
to fail in every way a request can make it fail."""

import base64
import http.client
import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from serving_process import BODY_CAP_MB, Server, call

from pipelines import images
from serving.server import Batcher


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


# --- hostile clients --------------------------------------------------------------------------
# A tiny SavedModel, one signature per way a valid-looking request can still fail in the graph
# or on its way there; served with batching, so that bad requests share calls with good ones.

TOY_MAX_INSTANCES = 64


def build_toy_model(version_dir: Path, scale: float = 10.0) -> None:
    """serving_default: a, b float32 [N] -> score = sqrt(a) * b (NaN for a < 0), above = a > b;
    labels: label int32 [N] -> value = label * scale, for labels 0..9 only (a table lookup), and
        name = the label as text;
    images: images string [N] -> mean grey level (the bytes must decode as an image);
    expand: n float32 [N] -> values [N, 100000] (a large response from a small request)."""

    class Toy(tf.Module):
        def __init__(self):
            self.table = tf.Variable(tf.range(10, dtype=tf.float32) * scale)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def arithmetic(self, a, b):
            return {"score": tf.sqrt(a) * b, "above": a > b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="label")])
        def labels(self, label):
            return {"value": tf.gather(self.table, label), "name": tf.strings.as_string(label)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        def images(self, images):
            def mean(encoded):
                image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
                return tf.reduce_mean(tf.cast(image, tf.float32))

            return {"mean": tf.map_fn(mean, images, fn_output_signature=tf.float32)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="n")])
        def expand(self, n):
            return {"values": tf.ones([tf.shape(n)[0], 100_000]) * n[:, None]}

    toy = Toy()
    tf.saved_model.save(toy, str(version_dir), signatures={
        "serving_default": toy.arithmetic, "labels": toy.labels, "images": toy.images,
        "expand": toy.expand})


@pytest.fixture(scope="module")
def toy_exports(tmp_path_factory):
    """Two exports of the toy model, labels scaled by 10 and by 20, to copy where needed."""
    folder = tmp_path_factory.mktemp("toy_exports")
    for scale in (10, 20):
        build_toy_model(folder / str(scale), scale)
    return folder


@pytest.fixture(scope="module")
def toy_server(toy_exports, tmp_path_factory):
    base = tmp_path_factory.mktemp("toy_served")
    shutil.copytree(toy_exports / "10", base / "toy" / "1")
    running = Server(base, "--batching", "--batch-timeout-ms", "50",
                     "--max-instances", str(TOY_MAX_INSTANCES), ready="toy")
    yield running
    running.stop()


def toy_url(server) -> str:
    return f"{server.url}/v1/models/toy:predict"


def all_at_once(bodies: list, url: str) -> list:
    """(status, body) of each request, all sent at the same moment from their own threads."""
    answers = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def client(i):
        start.wait()
        answers[i] = call(url, raw=bodies[i] if isinstance(bodies[i], bytes) else None,
                          body=None if isinstance(bodies[i], bytes) else bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_batcher_runs_each_request_alone_when_their_batch_fails():
    calls = []

    def refuses_negatives(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        if (inputs["x"] < 0).any():
            raise ValueError("a negative x")
        return {"y": inputs["x"] * 2}

    batcher = Batcher(refuses_negatives, max_batch_size=64, timeout_ms=300)
    results = {}
    start = threading.Barrier(8)

    def client(i):
        start.wait()
        try:
            results[i] = batcher({"x": np.full((1, 2), i if i < 7 else -1, dtype=np.float32)})
        except ValueError as error:
            results[i] = error

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(calls) > 1, calls  # a batch did form, with the bad request in it
    for i in range(7):
        np.testing.assert_array_equal(results[i]["y"], np.full((1, 2), 2 * i))
    assert isinstance(results[7], ValueError)


def test_a_bad_request_fails_alone_in_a_batch(toy_server, png_bytes):
    url = toy_url(toy_server)
    not_an_image = {"b64": base64.b64encode(b"not an image").decode()}
    for _ in range(5):
        labels = all_at_once([{"signature_name": "labels", "instances": [i]} for i in range(7)]
                             + [{"signature_name": "labels", "instances": [10]}], url)
        assert labels[:7] == [(200, {"predictions": [{"value": 10.0 * i, "name": str(i)}]})
                              for i in range(7)]
        assert labels[7][0] == 400 and "indices[0] = 10 is not in [0, 10)" in labels[7][1]["error"]

        valid = {"signature_name": "images",
                 "instances": [{"b64": base64.b64encode(png_bytes[0]).decode()}]}
        images = all_at_once([valid] * 7 + [{"signature_name": "images",
                                             "instances": [not_an_image]}], url)
        assert all(status == 200 for status, _ in images[:7]), images
        assert images[7][0] == 400
        # A base64 that is not an image says so, and which input it was.
        assert "input 'images'" in images[7][1]["error"]
        assert "Unknown image file format" in images[7][1]["error"]


@pytest.mark.parametrize("message, reason", [
    ("Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined at "
     "(most recent call last):\n<stack traces unavailable>\nUnknown image file format. One of "
     "JPEG, PNG, GIF, BMP required.\n\t [[{{node map/while/decode_image/DecodeImage}}]] "
     "[Op:__inference_signature_wrapper_237]",
     "Unknown image file format. One of JPEG, PNG, GIF, BMP required."),
    # gan_cgan's label past the classes, inside the Keras embedding's function:
    ("{{function_node __inference_signature_wrapper_<lambda>_214}} indices[0] = 10 is not in "
     "[0, 10)\n\t [[{{function_node __inference_<lambda>_195}}{{node cgan_generator_1/"
     "label_embedding_1/GatherV2}}]] [Op:__inference_signature_wrapper_<lambda>_214]",
     "indices[0] = 10 is not in [0, 10)"),
])
def test_a_graph_error_is_told_by_its_own_line(message, reason):
    from serving.server import _reason

    assert _reason(tf.errors.InvalidArgumentError(None, None, message)) == reason


def test_non_finite_numbers_are_refused_in_and_out(toy_server):
    url = toy_url(toy_server)
    for number in ("NaN", "Infinity", "-Infinity", "1e400", "1e39", "null"):
        status, answer = call(url, raw=b'{"instances": [{"a": %s, "b": 1}]}' % number.encode())
        assert status == 400 and "input 'a'" in answer["error"], (number, answer)
        status, answer = call(url, raw=b'{"inputs": {"a": [1, %s], "b": [1, 1]}}'
                              % number.encode())
        assert status == 400 and "input 'a'" in answer["error"], (number, answer)
    # Finite inputs whose answer is not: sqrt(-1).
    status, answer = call(url, {"instances": [{"a": -1.0, "b": 1.0}]})
    assert status == 400 and "output 'score'" in answer["error"], answer
    assert call(url, {"instances": [{"a": 4.0, "b": 3.0}]}) == (
        200, {"predictions": [{"score": 6.0, "above": True}]})


def test_deep_nesting_and_a_list_signature_name_are_400(toy_server):
    url = toy_url(toy_server)
    deep = b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    status, answer = call(url, raw=deep)
    assert status == 400 and "nested too deep" in answer["error"], answer
    shallow_but_past_the_rank = {"signature_name": "labels", "instances": [[[[1]]]]}
    status, answer = call(url, shallow_but_past_the_rank)
    assert status == 400 and "nested deeper than its shape [-1]" in answer["error"], answer
    status, answer = call(url, {"signature_name": ["labels"], "instances": [1]})
    assert status == 400 and "'signature_name' must be a string" in answer["error"], answer


@pytest.mark.parametrize("signature, value, problem", [
    ("serving_default", "3.2", "float32 takes numbers, not strings"),
    ("serving_default", True, "float32 takes numbers, not true/false"),
    ("serving_default", {"b64": "AAAA"}, "need DT_STRING"),
    ("labels", 3.7, "int32 takes integers, not numbers with a fraction"),
    ("labels", 3.0, "int32 takes integers, not numbers with a fraction"),
    ("labels", True, "int32 takes integers, not true/false"),
    ("labels", "3", "int32 takes integers, not strings"),
    ("labels", 2**31, "out of bounds for int32"),
    ("labels", -1, "indices[0] = -1 is not in [0, 10)"),  # refused by the graph, alone
    ("images", 7, "string takes strings or {\"b64\"} objects, not integers"),
])
def test_types_are_strict_against_the_signature(toy_server, signature, value, problem):
    url = toy_url(toy_server)
    if signature == "serving_default":
        body = {"instances": [{"a": value, "b": 1.0}]}
    else:
        body = {"signature_name": signature, "instances": [value]}
    status, answer = call(url, body)
    assert status == 400 and problem in answer["error"], answer


def test_both_formats_refuse_empty_input_alike(toy_server):
    url = toy_url(toy_server)
    answers = [call(url, body) for body in (
        {"signature_name": "labels", "instances": []},
        {"signature_name": "labels", "inputs": []},
        {"signature_name": "labels", "inputs": {"label": []}},
        {"inputs": {"a": [], "b": []}},
    )]
    assert answers == [(400, {"error": "The request has no instances: send at least one"})] * 4


def test_max_instances_is_a_400_that_names_the_limit(toy_server):
    url = toy_url(toy_server)
    labels = [i % 10 for i in range(TOY_MAX_INSTANCES)]
    status, answer = call(url, {"signature_name": "labels", "instances": labels})
    assert status == 200 and len(answer["predictions"]) == TOY_MAX_INSTANCES
    for body in ({"signature_name": "labels", "instances": [*labels, 1]},
                 {"signature_name": "labels", "inputs": {"label": [*labels, 1]}}):
        status, answer = call(url, body)
        assert status == 400, answer
        assert f"{TOY_MAX_INSTANCES + 1} instances, over the limit of {TOY_MAX_INSTANCES}" \
            in answer["error"]


def test_a_large_response_does_not_stall_a_small_request(toy_server):
    url = toy_url(toy_server)
    small = {"instances": [{"a": 4.0, "b": 3.0}]}
    big = {"signature_name": "expand", "instances": list(range(TOY_MAX_INSTANCES // 2))}
    assert call(url, {"signature_name": "expand", "instances": [1]})[0] == 200  # its first call
    timings = {}

    def large():  # the answer is read here, parsed after: this process has its own lock
        started = time.perf_counter()
        request = urllib.request.Request(url, json.dumps(big).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            timings["status"], timings["body"] = response.status, response.read()
        timings["large"] = time.perf_counter() - started

    thread = threading.Thread(target=large)
    thread.start()
    time.sleep(0.05)
    small_ones = []
    while thread.is_alive():
        started = time.perf_counter()
        assert call(url, small)[0] == 200
        small_ones.append(time.perf_counter() - started)
    thread.join()
    assert timings["status"] == 200
    assert len(json.loads(timings.pop("body"))["predictions"]) == len(big["instances"])
    # 3.2 million numbers written as 13 MB of JSON: a second of work, none of it on the event
    # loop nor in one piece that holds the interpreter lock.
    assert len(small_ones) >= 5, (timings, small_ones)
    assert max(small_ones) < timings["large"] / 4, (timings, small_ones)


def test_errors_are_json_and_the_api_description_is_off(toy_server):
    for path, method, expected in (("/openapi.json", "GET", 404), ("/docs", "GET", 404),
                                   ("/no/such/route", "GET", 404),
                                   ("/v1/models/toy:predict", "PUT", 405)):
        request = urllib.request.Request(f"{toy_server.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(request, timeout=30)
        assert failure.value.code == expected
        assert set(json.loads(failure.value.read())) == {"error"}


def test_metrics_label_only_models_and_count_each_outcome(toy_server):
    names = [f"probe-{i:03d}-{'x' * 200}" for i in range(30)]
    for name in names:
        assert call(f"{toy_server.url}/v1/models/{name}:predict", {"instances": [1]})[0] == 404
    url = toy_url(toy_server)
    assert call(url, raw=b'{"instances": [{"a": NaN, "b": 1}]}')[0] == 400
    assert call(url, {"instances": [{"a": 1.0, "b": 1.0}]})[0] == 200
    with urllib.request.urlopen(f"{toy_server.url}/monitoring/prometheus/metrics") as response:
        text = response.read().decode()
    assert "probe-" not in text
    counts = {}
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:request_count_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            counts[labels["model_name"], labels["status"]] = float(line.split()[-1])
    assert counts["(unknown)", "NOT_FOUND"] >= len(names)
    assert counts["toy", "INVALID_ARGUMENT"] >= 1
    assert counts["toy", "OK"] >= 1
    assert not any(status == "INTERNAL" for _, status in counts), counts


def wait_for(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def states_of(server, model: str) -> dict:
    status, body = call(f"{server.url}/v1/models/{model}")
    return {v["version"]: v["state"] for v in body.get("model_version_status", [])}


def label_3(server, model: str):
    status, body = call(f"{server.url}/v1/models/{model}:predict",
                        {"signature_name": "labels", "instances": [3]})
    return body["predictions"][0]["value"] if status == 200 else status


def test_versions_follow_the_disk_both_ways(toy_server, toy_exports):
    """A rollback by removing the newest version; a re-export under the same number; a version
    replaced in place between two polls."""
    model = toy_server.base / "versioned"
    shutil.copytree(toy_exports / "10", model / "1")  # label 3 -> 30
    shutil.copytree(toy_exports / "20", model / "2")  # label 3 -> 60
    wait_for(lambda: label_3(toy_server, "versioned") == 60.0, "version 2")

    shutil.rmtree(model / "2")
    wait_for(lambda: states_of(toy_server, "versioned") == {"2": "END", "1": "AVAILABLE"},
             "version 2 unloaded once its directory is gone", seconds=10)
    assert label_3(toy_server, "versioned") == 30.0
    assert call(f"{toy_server.url}/v1/models/versioned/versions/2:predict",
                {"signature_name": "labels", "instances": [3]})[0] == 404

    shutil.copytree(toy_exports / "10", model / ".incoming")
    (model / ".incoming").rename(model / "2")  # the same number again, as an export renames
    wait_for(lambda: states_of(toy_server, "versioned") == {"2": "AVAILABLE", "1": "END"},
             "version 2 loaded again")
    assert label_3(toy_server, "versioned") == 30.0

    shutil.copytree(toy_exports / "20", model / ".incoming")
    (model / "2").rename(model / ".old")
    (model / ".incoming").rename(model / "2")  # faster than a poll: the number never went away
    wait_for(lambda: label_3(toy_server, "versioned") == 60.0, "the replaced version 2")


def test_a_slowly_copied_version_is_loaded_once_complete(toy_server, toy_exports):
    source, target = toy_exports / "20", toy_server.base / "slow" / "1"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("variables.data-*"))
    data = next((source / "variables").glob("variables.data-*"))
    content = data.read_bytes()
    copied = target / "variables" / data.name

    def attempts() -> int:
        return toy_server.log.read_text().count("slow/1 (attempt")

    # Growing by a few bytes a poll, past MAX_LOAD_ATTEMPTS polls: never given up.
    for size in range(1, 9):
        copied.write_bytes(content[:size])
        before = attempts()
        wait_for(lambda before=before: attempts() > before, "a load attempt on new bytes")
        assert states_of(toy_server, "slow") == {"1": "LOADING"}
    # Stalled: given up after a few attempts on the same bytes, and the log says so ...
    wait_for(lambda: states_of(toy_server, "slow") == {"1": "END"}, "the stalled copy given up")
    assert "slow/1: failed to load" in toy_server.log.read_text()
    assert "tried again when they change" in toy_server.log.read_text()
    # ... until the copy goes on and completes.
    copied.write_bytes(content)
    wait_for(lambda: states_of(toy_server, "slow") == {"1": "AVAILABLE"}, "the completed copy")
    assert label_3(toy_server, "slow") == 60.0


def test_a_non_loopback_host_is_warned_about():
    from serving.server import exposure_warning

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        assert "no authentication" in exposure_warning(host)


def test_an_export_removes_the_directories_of_killed_exports_only(tmp_path):
    import subprocess

    from serving.export import publish

    finished = subprocess.Popen(["true"])
    finished.wait()  # a process id that is gone: its export was killed
    killed = tmp_path / f".incomplete-{finished.pid}-abc"
    running = tmp_path / f".incomplete-{os.getpid()}-def"  # perhaps an export still writing
    unnamed_old, unnamed_new = tmp_path / ".incomplete-old", tmp_path / ".incomplete-new"
    for leftover in (killed, running, unnamed_old, unnamed_new):
        leftover.mkdir()
        (leftover / "saved_model.pb").write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    for path in (running, unnamed_old):
        os.utime(path, (two_hours_ago, two_hours_ago))
    version = publish(tmp_path, lambda directory: (directory / "saved_model.pb").write_bytes(b""))
    assert version == tmp_path / "1"
    assert not killed.exists() and not unnamed_old.exists()
    assert running.exists() and unnamed_new.exists()
