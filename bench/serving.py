"""REST serving throughput and latency for LeNet-5, beside the in-process call, in one run.

    python -m bench.serving [--seconds 4] [--signature serving_default]

Each request carries one digit, as a client sending a picture would: a PNG through
`serving_default` (decoded and MNIST-framed inside the graph) unless `--signature predict_pixels`
sends 32x32 floats instead. The server (`serving.server`, a subprocess on 127.0.0.1) is measured
at 1, 4 and 16 concurrent clients on keep-alive connections, without and with `--batching`;
the in-process figure is one `signature(...)` call per request in a loop, same model, same input.
Goal: at 16 clients with batching, at least half the in-process single-call throughput.
"""

import argparse
import base64
import http.client
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


def start_server(model_base: Path, batching: bool) -> tuple[subprocess.Popen, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "serving.server", "--model-base", str(model_base),
               "--port", str(port), "--log-level", "warning"]
    if batching:
        command += ["--batching", "--max-batch-size", "32", "--batch-timeout-ms", "2"]
    server = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/v1/models/digit_ocr")
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


def main(argv=None) -> dict:
    from apps import runner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--signature", default="serving_default",
                        choices=["serving_default", "predict_pixels"])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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


if __name__ == "__main__":
    main()
