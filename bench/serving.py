"""REST serving: throughput and latency for LeNet-5 beside the in-process call; the server under
hostile load.

    python -m bench.serving [--seconds 4] [--signature serving_default]
    python -m bench.serving --hostile [--requests 10000] [--clients 8] [--malformed 0.05]
                            [--model-base saved_models]

Throughput: each request carries one digit, as a client sending a picture would: a PNG through
`serving_default` (decoded and MNIST-framed inside the graph) unless `--signature predict_pixels`
sends 32x32 floats instead. The server (`serving.server`, a subprocess on 127.0.0.1) is measured
at 1, 4 and 16 concurrent clients on keep-alive connections, without and with `--batching`;
the in-process figure is one `signature(...)` call per request in a loop, same model, same input.
Goal: at 16 clients with batching, at least half the in-process single-call throughput.

Hostile load (`--hostile`): the five apps' models (`--model-base`, or stand-ins: each app's
serving model at its default size, untrained) served with `--batching`, then
- a soak: `--requests` from `--clients` keep-alive clients over every model, `--malformed` of
  them bad in each way a client has found to break a server (a base64 that is not an image, a
  label past the classes or with a fraction, NaN / Infinity / null / 1e400, a string or a bool
  for a float, a list for signature_name, JSON nested 3,000 deep, no instances, an unknown
  model, not JSON, more instances than --max-instances). Goal: no 5xx, no valid request failed,
  every bad one a 4xx {"error"}, the same answers after as before, memory flat;
- poisoned batches: one bad request beside 7 valid ones to the same model at the same moment,
  30 times for each model whose graph can refuse a request. Goal: no valid request lost;
- a small request (one fraud row) while a request at the instance limit (1,000 gan_cgan
  images) runs back to back. Goal: p99 under 2x its idle p99.
"""

import argparse
import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench import save_results, short_lenet_export

PROJECT = Path(__file__).resolve().parents[1]
CLIENTS = (1, 4, 16)
GOAL = 0.5  # of in-process single-call throughput, at 16 clients with batching


def request_body(signature: str, png: bytes, pixels: np.ndarray) -> dict:
    if signature == "serving_default":
        return {"instances": [{"b64": base64.b64encode(png).decode()}]}
    return {"signature_name": signature, "instances": pixels.tolist()}


def in_process(version_dir: Path, signature: str, png: bytes, pixels, seconds: float) -> dict:
    import tensorflow as tf

    function = tf.saved_model.load(str(version_dir)).signatures[signature]
    feed = ({"images": tf.constant([png])} if signature == "serving_default"
            else {"pixels": tf.constant(pixels)})
    for _ in range(20):
        function(**feed)  # warm up
    latencies = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        function(**feed)["probabilities"].numpy()
        latencies.append(time.perf_counter() - started)
    return summary(latencies, seconds)


def summary(latencies: list[float], seconds: float) -> dict:
    milliseconds = np.array(latencies) * 1000
    return {"requests_per_second": len(latencies) / seconds,
            "p50_ms": float(np.percentile(milliseconds, 50)),
            "p99_ms": float(np.percentile(milliseconds, 99)), "requests": len(latencies)}


def start_server(model_base: Path, batching: bool, ready: str = "digit_ocr",
                 log: Path | None = None) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "serving.server", "--model-base", str(model_base),
               "--port", str(port), "--log-level", "warning"]
    if batching:
        command += ["--batching", "--max-batch-size", "32", "--batch-timeout-ms", "2"]
    output = log.open("w") if log else subprocess.DEVNULL
    server = subprocess.Popen(command, cwd=PROJECT, stdout=output, stderr=output)
    if log:
        output.close()  # the server has its own copy
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/v1/models/{ready}")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not start")


def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    latencies, errors = [], []
    stop = time.perf_counter() + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            connection.request("POST", "/v1/models/digit_ocr:predict", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(response.status)
            mine.append(time.perf_counter() - started)
        latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. HTTP {errors[0]}")
    return summary(latencies, seconds)


def throughput(args) -> dict:
    from apps import runner

    with tempfile.TemporaryDirectory() as workdir:
        version_dir, png, pixels = short_lenet_export(Path(workdir))
        body = json.dumps(request_body(args.signature, png, pixels)).encode()
        results = {"in_process": in_process(version_dir, args.signature, png, pixels,
                                            args.seconds)}
        for batching in (False, True):
            server, port = start_server(version_dir.parent.parent, batching)
            try:
                for clients in CLIENTS:
                    key = f"{'batching' if batching else 'plain'}_{clients}"
                    results[key] = load(port, body, clients, args.seconds)
            finally:
                server.terminate()
                server.wait()

    base = results["in_process"]["requests_per_second"]
    rows = [{"path": "in-process call", "clients": 1, "requests/s": f"{base:.0f}",
             "p50 ms": f"{results['in_process']['p50_ms']:.2f}",
             "p99 ms": f"{results['in_process']['p99_ms']:.2f}", "x in-process": "1.00"}]
    for batching in (False, True):
        for clients in CLIENTS:
            figures = results[f"{'batching' if batching else 'plain'}_{clients}"]
            rows.append({"path": "REST, batching" if batching else "REST", "clients": clients,
                         "requests/s": f"{figures['requests_per_second']:.0f}",
                         "p50 ms": f"{figures['p50_ms']:.2f}", "p99 ms": f"{figures['p99_ms']:.2f}",
                         "x in-process": f"{figures['requests_per_second'] / base:.2f}"})
    ratio = results["batching_16"]["requests_per_second"] / base
    print(f"\nLeNet-5 serving, one digit per request ({args.signature}), {os.cpu_count()} cores")
    runner.print_table(rows)
    print(f"16 clients with batching: {ratio:.2f}x in-process (goal >= {GOAL})")
    save_results("serving", {"signature": args.signature, "seconds": args.seconds,
                              "results": results, "ratio_16_batching": ratio,
                              "goal": GOAL, "met": ratio >= GOAL})
    return results


# ---------------------------------------------------------------------------------------------
# Hostile load
# ---------------------------------------------------------------------------------------------

HOSTILE_MODELS = ("digit_ocr", "fraud", "gan_cgan", "captioning", "translation")
WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
POISON_ROUNDS = 30
LATENCY_SAMPLES = 300


def stand_in_exports(model_base: Path) -> None:
    """Each app's serving model at its default size, untrained: the soak needs their signatures
    and their cost, not their accuracy (seconds to build, where training takes an hour)."""
    import keras

    from apps import captioning, digit_ocr, fraud
    from models import anomaly, captioner, dcgan, seq2seq
    from pipelines import tabular, text_pairs

    def write(name: str, archive) -> None:
        archive.write_out(str(model_base / name / "1"), verbose=False)

    keras.utils.set_random_seed(0)
    write("digit_ocr", digit_ocr.serving_archive(digit_ocr.build_model("lenet5", 10)))
    schema = tabular.SYNTHETIC
    rows = np.random.default_rng(0).gamma(2.0, 1.0, (256, len(schema.features)))
    detector = anomaly.build_detector("autoencoder", schema.features, schema.log_features,
                                      rows.astype("float32"))
    write("fraud", fraud.serving_archive(detector, schema, threshold=1.0))
    write("gan_cgan", dcgan.serving_archive(dcgan.build_generator("cgan", 10, dcgan.FILTERS),
                                            conditional=True))
    tokenizer = captioning.build_tokenizer(["a red circle above a blue square",
                                            "two green triangles", "a small blue circle"])
    model = captioner.build_model(tokenizer.size)
    write("captioning", captioner.serving_archive(captioner.Captioner(model, tokenizer, 12)))
    pairs = [(" ".join(WORDS[:3]), "un deux trois"), (" ".join(WORDS[3:6]), "quatre cinq six")]
    source, target = text_pairs.build_tokenizers(pairs, (50, 50), ("word", "word"), False)
    text_pairs.encode_pairs(pairs, source, target)  # builds the tokenizers' lookup layers
    model = seq2seq.build_model(source.size, target.size)
    write("translation", seq2seq.serving_archive(seq2seq.Translator(model, source, target, 12)))


def post(connection: http.client.HTTPConnection, model: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", f"/v1/models/{model}:predict", body,
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def b64(content: bytes) -> dict:
    return {"b64": base64.b64encode(content).decode()}


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def valid_requests(port: int, models: list[str], rng) -> dict:
    """For each model, instances -> a valid request body, from its signature's inputs."""
    from pipelines import images

    def inputs(model: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", f"/v1/models/{model}/metadata")
        metadata = json.loads(connection.getresponse().read())
        return metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]

    digits = [png(255 - frame.numpy()[..., 0]) for frame, _ in images.load_digits().test.take(16)]
    photos = [png(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(8)]
    makers = {
        "digit_ocr": lambda n: {"instances": [b64(digits[rng.integers(16)]) for _ in range(n)]},
        "captioning": lambda n: {"instances": [b64(photos[rng.integers(8)]) for _ in range(n)]},
        "translation": lambda n: {"instances": [
            " ".join(rng.choice(WORDS, int(rng.integers(1, 7)))) for _ in range(n)]},
    }
    if "fraud" in models:
        columns = sorted(inputs("fraud"))
        makers["fraud"] = lambda n: {"instances": [
            {c: round(float(rng.gamma(2.0, 1.0)), 4) for c in columns} for _ in range(n)]}
    if "gan_cgan" in models:
        latent = int(inputs("gan_cgan")["noise"]["tensor_shape"]["dim"][1]["size"])
        makers["gan_cgan"] = lambda n: {"instances": [
            {"noise": np.round(rng.standard_normal(latent), 4).tolist(),
             "label": int(rng.integers(10))} for _ in range(n)]}
    return {model: makers[model] for model in models}


def malformed_requests(valid: dict, max_instances: int) -> dict:
    """Each way to send a bad request -> () -> (model, body): the kinds that broke the server."""
    def fraud_with(value: str) -> tuple[str, bytes]:  # `value` as JSON text, in one column
        body = valid["fraud"](1)
        body["instances"][0][next(iter(body["instances"][0]))] = "VALUE"
        return "fraud", json.dumps(body).replace('"VALUE"', value).encode()

    def gan_label(label) -> tuple[str, bytes]:
        body = valid["gan_cgan"](1)
        body["instances"][0]["label"] = label
        return "gan_cgan", json.dumps(body).encode()

    kinds = {
        "base64 not an image": lambda: ("digit_ocr", json.dumps(
            {"instances": [b64(b"not an image at all")]}).encode()),
        "not-an-image among images": lambda: ("captioning", json.dumps(
            {"instances": [*valid["captioning"](1)["instances"], b64(b"GIF89a broken")]}
        ).encode()),
        "label past the classes": lambda: gan_label(10),
        "label with a fraction": lambda: gan_label(3.7),
        "NaN in a float": lambda: fraud_with("NaN"),
        "Infinity in a float": lambda: fraud_with("-Infinity"),
        "null in a float": lambda: fraud_with("null"),
        "1e400 in a float": lambda: fraud_with("1e400"),
        "string for a float": lambda: fraud_with('"3.2"'),
        "bool for a float": lambda: fraud_with("true"),
        "signature_name a list": lambda: ("translation", json.dumps(
            {"signature_name": ["serving_default"], "instances": ["one two"]}).encode()),
        "nested 3,000 deep": lambda: ("fraud",
                                      b'{"instances": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
        "no instances": lambda: ("translation", b'{"instances": []}'),
        "empty columnar input": lambda: ("translation", b'{"inputs": {"sentences": []}}'),
        "unknown model": lambda: (f"model-{os.urandom(4).hex()}", b'{"instances": [1]}'),
        "not JSON": lambda: ("digit_ocr", b'{"instances": [{"b64": '),
        "over --max-instances": lambda: ("fraud", json.dumps(
            valid["fraud"](max_instances + 1)).encode()),
    }
    needs = {"digit_ocr": ("base64 not an image", "not JSON"),
             "captioning": ("not-an-image among images",), "gan_cgan": ("label past",
                                                                        "label with"),
             "fraud": ("in a float", "for a float", "nested", "over --max"),
             "translation": ("signature_name", "no instances", "empty columnar")}
    missing = [model for model in needs if model not in valid]
    return {kind: make for kind, make in kinds.items()
            if not any(marker in kind for model in missing for marker in needs[model])}


def is_json_error(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and set(answer) == {"error"} and bool(answer["error"])


def soak(port: int, valid: dict, malformed: dict, requests: int, clients: int, share: float,
         rng) -> dict:
    models, kinds = sorted(valid), sorted(malformed)
    plan = []
    for _ in range(requests):
        if rng.random() < share:
            kind = kinds[rng.integers(len(kinds))]
            plan.append((kind, *malformed[kind]()))
        else:
            model = models[rng.integers(len(models))]
            plan.append(("valid", model, json.dumps(valid[model](int(rng.integers(1, 5))))
                         .encode()))
    outcomes = []  # (kind, model, status, seconds, answered with {"error"})

    def client(chunk):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for kind, model, body in chunk:
            started = time.perf_counter()
            try:
                status, answer = post(connection, model, body)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status, answer = 0, b""  # no answer at all
            seconds = time.perf_counter() - started
            mine.append((kind, model, status, seconds, status != 200 and is_json_error(answer)))
        outcomes.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(plan[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    valid_ones = [o for o in outcomes if o[0] == "valid"]
    bad_ones = [o for o in outcomes if o[0] != "valid"]
    latencies = np.array([o[3] for o in valid_ones]) * 1000
    by_kind = {}
    for kind, _, status, _, answered in bad_ones:
        entry = by_kind.setdefault(kind, {"sent": 0, "4xx_error_json": 0, "statuses": []})
        entry["sent"] += 1
        entry["4xx_error_json"] += int(400 <= status < 500 and answered)
        if status not in entry["statuses"]:
            entry["statuses"].append(status)
    return {"requests": len(outcomes), "clients": clients, "seconds": wall,
            "requests_per_second": len(outcomes) / wall,
            "valid": len(valid_ones), "malformed": len(bad_ones),
            "5xx": sum(o[2] >= 500 for o in outcomes),
            "no_answer": sum(o[2] == 0 for o in outcomes),
            "valid_failed": sum(o[2] != 200 for o in valid_ones),
            "malformed_not_4xx_error_json": sum(not (400 <= o[2] < 500 and o[4])
                                                for o in bad_ones),
            "valid_p50_ms": float(np.percentile(latencies, 50)),
            "valid_p99_ms": float(np.percentile(latencies, 99)),
            "valid_p99_ms_by_model": {
                model: float(np.percentile([o[3] * 1000 for o in valid_ones if o[1] == model], 99))
                for model in models},
            "malformed_by_kind": by_kind}


def poisoned_batches(port: int, valid: dict, malformed: dict) -> dict:
    """One bad request beside 7 valid ones, sent at the same moment to one model, 30 times."""
    poisons = {"digit_ocr": "base64 not an image", "gan_cgan": "label past the classes",
               "captioning": "not-an-image among images"}
    results = {}
    for model, kind in poisons.items():
        if model not in valid:
            continue
        lost, bad_refused = 0, 0
        for _ in range(POISON_ROUNDS):
            bodies = [json.dumps(valid[model](1)).encode() for _ in range(7)]
            bodies.append(malformed[kind]()[1])
            answers = [None] * 8
            start = threading.Barrier(8)

            def client(i, model=model, bodies=bodies, answers=answers, start=start):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                start.wait()
                answers[i] = post(connection, model, bodies[i])[0]

            threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            lost += sum(status != 200 for status in answers[:7])
            bad_refused += answers[7] == 400
        results[model] = {"poison": kind, "rounds": POISON_ROUNDS,
                          "valid_sent": 7 * POISON_ROUNDS, "valid_lost": lost,
                          "bad_answered_400": bad_refused}
    return results


def small_while_large(port: int, valid: dict, max_instances: int) -> dict:
    """A one-row fraud request's latency alone, then while max_instances gan_cgan images are
    asked for back to back on another connection."""
    small = json.dumps(valid["fraud"](1)).encode()
    large = json.dumps(valid["gan_cgan"](max_instances)).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def latencies() -> np.ndarray:
        measured = []
        for _ in range(LATENCY_SAMPLES):
            started = time.perf_counter()
            assert post(connection, "fraud", small)[0] == 200
            measured.append(time.perf_counter() - started)
        return np.array(measured) * 1000

    for _ in range(20):
        post(connection, "fraud", small)  # warm up
    idle = latencies()
    stop, large_runs = threading.Event(), []

    def large_client():
        mine = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while not stop.is_set():
            started = time.perf_counter()
            status, answer = post(mine, "gan_cgan", large)
            large_runs.append((time.perf_counter() - started, status, len(answer)))

    thread = threading.Thread(target=large_client)
    thread.start()
    time.sleep(0.3)
    during = latencies()
    stop.set()
    thread.join()
    return {"small": "fraud, 1 instance", "large": f"gan_cgan, {max_instances} instances",
            "large_request_bytes": len(large),
            "large_response_bytes": large_runs[0][2], "large_statuses": sorted(
                {status for _, status, _ in large_runs}),
            "large_runs": len(large_runs),
            "large_seconds": float(np.mean([seconds for seconds, _, _ in large_runs])),
            "idle_p50_ms": float(np.percentile(idle, 50)),
            "idle_p99_ms": float(np.percentile(idle, 99)),
            "during_p50_ms": float(np.percentile(during, 50)),
            "during_p99_ms": float(np.percentile(during, 99)),
            "p99_ratio": float(np.percentile(during, 99) / np.percentile(idle, 99))}


def answers_to(port: int, bodies: dict) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    return {model: post(connection, model, body) for model, body in bodies.items()}


def hostile(args) -> dict:
    import psutil

    from apps import runner
    from serving.server import MAX_INSTANCES

    rng = np.random.default_rng(26)
    with tempfile.TemporaryDirectory() as workdir:
        model_base = args.model_base
        if model_base is None:
            model_base = Path(workdir) / "saved_models"
            stand_in_exports(model_base)
        models = [m for m in HOSTILE_MODELS if (model_base / m).is_dir()]
        log = Path(workdir) / "server.log"
        server, port = start_server(model_base, batching=True, ready=models[0], log=log)
        try:
            valid = valid_requests(port, models, rng)
            malformed = malformed_requests(valid, MAX_INSTANCES)
            fixed = {model: json.dumps(make(2)).encode() for model, make in valid.items()}
            before = answers_to(port, fixed)  # and every model warmed up
            process, rss, soaking = psutil.Process(server.pid), [], threading.Event()

            def sample_memory():  # the server's resident memory, twice a second
                while not soaking.wait(0.5):
                    rss.append(process.memory_info().rss / 2**20)

            sampler = threading.Thread(target=sample_memory)
            rss.append(process.memory_info().rss / 2**20)
            sampler.start()
            figures = {"models": models, "stand_ins": args.model_base is None,
                       "soak": soak(port, valid, malformed, args.requests, args.clients,
                                    args.malformed, rng)}
            soaking.set()
            sampler.join()
            rss.append(process.memory_info().rss / 2**20)
            figures |= {"rss_start_mb": rss[0], "rss_mid_mb": rss[len(rss) // 2],
                        "rss_end_mb": rss[-1], "rss_max_mb": max(rss)}
            figures["same_answers_after"] = answers_to(port, fixed) == before
            figures["poisoned_batches"] = poisoned_batches(port, valid, malformed)
            if {"fraud", "gan_cgan"} <= set(models):
                figures["small_while_large"] = small_while_large(port, valid, MAX_INSTANCES)
        finally:
            server.terminate()
            server.wait()
        figures["server_log_tracebacks"] = log.read_text().count("Traceback")

    soaked = figures["soak"]
    print(f"\nServing under hostile load: {', '.join(models)}"
          f"{' (untrained stand-ins)' if figures['stand_ins'] else ''}, --batching, "
          f"{os.cpu_count()} cores")
    runner.print_table([
        {"figure": "soak requests (clients)", "value": f"{soaked['requests']} "
                                                       f"({soaked['clients']})"},
        {"figure": "valid / malformed", "value": f"{soaked['valid']} / {soaked['malformed']}"},
        {"figure": "5xx / no answer", "value": f"{soaked['5xx']} / {soaked['no_answer']}"},
        {"figure": "valid requests failed", "value": soaked["valid_failed"]},
        {"figure": "malformed not a 4xx {\"error\"}",
         "value": soaked["malformed_not_4xx_error_json"]},
        {"figure": "valid p50 / p99 ms",
         "value": f"{soaked['valid_p50_ms']:.1f} / {soaked['valid_p99_ms']:.1f}"},
        {"figure": "requests/s", "value": f"{soaked['requests_per_second']:.0f}"},
        {"figure": "server RSS start -> half-way -> end (max) MB",
         "value": f"{figures['rss_start_mb']:.0f} -> {figures['rss_mid_mb']:.0f} -> "
                  f"{figures['rss_end_mb']:.0f} ({figures['rss_max_mb']:.0f})"},
        {"figure": "same answers after the soak", "value": figures["same_answers_after"]},
        {"figure": "tracebacks in the server log", "value": figures["server_log_tracebacks"]},
        *({"figure": f"poisoned batches, {model}: valid lost",
           "value": f"{entry['valid_lost']} of {entry['valid_sent']} "
                    f"(bad answered 400: {entry['bad_answered_400']}/{entry['rounds']})"}
          for model, entry in figures["poisoned_batches"].items()),
    ])
    if "small_while_large" in figures:
        small = figures["small_while_large"]
        print(f"\n{small['small']} while {small['large']} run back to back "
              f"({small['large_seconds']:.2f} s each, "
              f"{small['large_response_bytes'] / 2**20:.1f} MB answers):")
        runner.print_table([
            {"small request": "idle", "p50 ms": f"{small['idle_p50_ms']:.2f}",
             "p99 ms": f"{small['idle_p99_ms']:.2f}"},
            {"small request": "during", "p50 ms": f"{small['during_p50_ms']:.2f}",
             "p99 ms": f"{small['during_p99_ms']:.2f}"},
        ])
        print(f"p99 during / idle: {small['p99_ratio']:.2f} (goal < 2)")
    save_results("serving_hostile", {"requests": args.requests, "clients": args.clients,
                                      "malformed_share": args.malformed, **figures})
    return figures


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.serving",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--signature", default="serving_default",
                        choices=["serving_default", "predict_pixels"])
    parser.add_argument("--hostile", action="store_true",
                        help="the soak, poisoned batches and a small request beside a large one")
    parser.add_argument("--requests", type=int, default=10_000, help="soak requests (--hostile)")
    parser.add_argument("--clients", type=int, default=8, help="soak clients (--hostile)")
    parser.add_argument("--malformed", type=float, default=0.05,
                        help="share of malformed soak requests (--hostile)")
    parser.add_argument("--model-base", type=Path, default=None,
                        help="serve these exports (--hostile; default: untrained stand-ins)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return hostile(args) if args.hostile else throughput(args)


if __name__ == "__main__":
    main()
