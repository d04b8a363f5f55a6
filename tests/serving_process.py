"""A REST server of this project run for real: `python -m serving.server` in a subprocess on
127.0.0.1, as the serving and web page tests use it."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
    def __init__(self, base: Path, *options: str, ready: str = "digit_ocr"):
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
                if call(f"{self.url}/v1/models/{ready}")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
