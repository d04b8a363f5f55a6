"""A TensorFlow-Serving-compatible REST server for a folder of SavedModels, without Docker.

    python -m serving.server --model-base saved_models [--port 8501] [--host 127.0.0.1] [--batching]

It speaks the REST API of TensorFlow Serving (tensorflow/serving `g3doc/api_rest.md`) over every
model directory under the base, so clients written against it work unchanged against the official
image, and the other way round:

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]              version status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata     signature defs
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict      row ("instances") or columnar
                                                                   ("inputs") requests
    GET  /monitoring/prometheus/metrics                            request counts and latencies

Version policy "latest" (TF Serving's default): the newest complete version of each model is
served, and a new integer directory that appears under a model is loaded without a restart
(`--num-versions N` keeps the newest N). `--batching` merges concurrent requests to one model
into one call, up to `--max-batch-size` rows or `--batch-timeout-ms`, as TF Serving's
`--enable_batching` does.
"""

import argparse
import base64
import json
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("serving.server")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no separators: cannot leave the base
DEFAULT_PORT = 8501
POLL_SECONDS = 1.0  # as TF Serving's --file_system_poll_wait_seconds
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_LOAD_ATTEMPTS = 5  # as TF Serving's --max_num_load_retries: a half-copied version can fail
MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_MS = 2.0


class ServingError(Exception):
    """Becomes an HTTP response: `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------------------------
# Servables: one loaded SavedModel version and its signatures
# ---------------------------------------------------------------------------------------------


@dataclass
class Signature:
    name: str
    function: object  # a ConcreteFunction taking keyword tensors
    inputs: dict  # input name -> tf.TensorSpec
    batcher: "Batcher | None" = None

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.batcher is not None:
            return self.batcher(inputs)
        return self.run(inputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outputs = self.function(**{k: tf.constant(v) for k, v in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}


@dataclass
class Servable:
    name: str
    version: int
    signatures: dict[str, Signature]
    signature_defs: dict  # the SignatureDefMap as TF Serving prints it
    model: object = field(repr=False)  # keeps the loaded SavedModel alive


def is_complete_saved_model(version_dir: Path) -> bool:
    return (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()


def signature_defs_as_json(version_dir: Path) -> dict:
    """The SavedModel's SignatureDefs in the JSON form TF Serving's metadata API returns."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    signature_map = saved_model.meta_graphs[0].signature_def
    return {
        name: json_format.MessageToDict(
            signature_map[name],
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        for name in sorted(signature_map)
    }


def load_servable(name: str, version: int, version_dir: Path, batching: dict | None) -> Servable:
    import tensorflow as tf

    model = tf.saved_model.load(str(version_dir))
    signatures = {}
    for key, function in model.signatures.items():
        _, input_specs = function.structured_input_signature
        signature = Signature(key, function, dict(input_specs))
        if batching and all(spec.shape.rank and spec.shape[0] is None
                            for spec in input_specs.values()):
            signature.batcher = Batcher(signature.run, **batching)
        signatures[key] = signature
    return Servable(name, version, signatures, signature_defs_as_json(version_dir), model)


# ---------------------------------------------------------------------------------------------
# Dynamic batching
# ---------------------------------------------------------------------------------------------


class Batcher:
    """Merges concurrent calls into one: the first request waits at most `timeout_ms` for others
    to join, up to `max_batch_size` rows, then all run as one batch and each gets its rows back.

    Unlike a fixed timeout, it never waits when no other call is in flight: a lone client pays
    no batching latency, and batches form exactly when requests queue up behind the model.
    """

    def __init__(self, run, max_batch_size: int = MAX_BATCH_SIZE,
                 timeout_ms: float = BATCH_TIMEOUT_MS):
        self.run = run
        self.max_batch_size = max_batch_size
        self.timeout = timeout_ms / 1000.0
        self.requests: queue.Queue = queue.Queue()
        self.in_flight = 0
        self._count_lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True, name="batcher").start()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        future: Future = Future()
        with self._count_lock:
            self.in_flight += 1
        try:
            self.requests.put((inputs, future))
            return future.result()
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def _serve(self) -> None:
        while True:
            batch = [self.requests.get()]
            rows = _rows(batch[0][0])
            deadline = time.monotonic() + self.timeout
            while rows < self.max_batch_size and self.in_flight > len(batch):
                try:
                    item = self.requests.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                batch.append(item)
                rows += _rows(item[0])
            self._run(batch)

    def _run(self, batch) -> None:
        if len(batch) == 1 or not _stackable([inputs for inputs, _ in batch]):
            for inputs, future in batch:
                _settle(future, lambda inputs=inputs: self.run(inputs))
            return
        sizes = [_rows(inputs) for inputs, _ in batch]
        merged = {name: np.concatenate([inputs[name] for inputs, _ in batch])
                  for name in batch[0][0]}
        try:
            outputs = self.run(merged)
        except Exception as error:  # every request of the batch gets the failure
            for _, future in batch:
                future.set_exception(error)
            return
        offsets = np.cumsum([0, *sizes])
        for (_, future), start, stop in zip(batch, offsets[:-1], offsets[1:]):
            future.set_result({name: value[start:stop] for name, value in outputs.items()})


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(inputs.values())))


def _stackable(requests: list[dict[str, np.ndarray]]) -> bool:
    first = requests[0]
    return all(
        inputs.keys() == first.keys()
        and all(inputs[k].shape[1:] == first[k].shape[1:] for k in first)
        and len({len(v) for v in inputs.values()}) == 1
        for inputs in requests
    )


def _settle(future: Future, compute) -> None:
    try:
        future.set_result(compute())
    except Exception as error:
        future.set_exception(error)


# ---------------------------------------------------------------------------------------------
# The model registry: what is under the base, what is loaded, what changed
# ---------------------------------------------------------------------------------------------


class ModelRegistry:
    """Scans `base` every `poll_seconds`; serves the newest `num_versions` complete versions."""

    def __init__(self, base: Path, num_versions: int = 1, batching: dict | None = None,
                 version_labels: dict[str, dict[str, int]] | None = None):
        self.base = base
        self.num_versions = num_versions
        self.batching = batching
        self.version_labels = version_labels or {}
        self.servables: dict[str, dict[int, Servable]] = {}
        self.states: dict[str, dict[int, tuple[str, str]]] = {}  # (state, error message)
        self._warned: set[Path] = set()
        self._failed_loads: dict[Path, int] = {}
        self._lock = threading.Lock()

    def scan(self) -> None:
        for model_dir in sorted(self.base.iterdir()):
            if model_dir.is_dir() and MODEL_NAME.match(model_dir.name):
                self._scan_model(model_dir)

    def _scan_model(self, model_dir: Path) -> None:
        name = model_dir.name
        complete = []
        for version_dir in model_dir.iterdir():
            if not (version_dir.is_dir() and version_dir.name.isdigit()):
                continue  # temporary export directories, assets.extra and the like
            if is_complete_saved_model(version_dir):
                complete.append(int(version_dir.name))
            elif version_dir not in self._warned:
                self._warned.add(version_dir)
                log.warning("skipping %s: not a complete SavedModel", version_dir)
        wanted = sorted(complete)[-self.num_versions :]
        loaded = self.servables.get(name, {})
        with self._lock:
            states = self.states.setdefault(name, {})
        for version in wanted:
            version_dir = model_dir / str(version)
            if version in loaded or states.get(version, ("",))[0] == "END":
                continue
            self._set_state(name, version, "LOADING")
            try:
                servable = load_servable(name, version, version_dir, self.batching)
            except Exception as error:  # a broken model must not take the server down
                attempts = self._failed_loads.get(version_dir, 0) + 1
                self._failed_loads[version_dir] = attempts
                message = f"failed to load: {str(error).strip().splitlines()[0]}"
                # Still being copied, perhaps: the next scans try again, a few times.
                gave_up = attempts >= MAX_LOAD_ATTEMPTS
                self._set_state(name, version, "END" if gave_up else "LOADING", message)
                log.warning("%s/%s (attempt %d): %s", name, version, attempts, message)
                continue
            with self._lock:
                self.servables.setdefault(name, {})[version] = servable
            self._set_state(name, version, "AVAILABLE")
            log.info("serving %s version %s", name, version)
        newest_loaded = set(sorted(self.servables.get(name, {}))[-self.num_versions :])
        for version in list(self.servables.get(name, {})):
            if version not in newest_loaded:
                with self._lock:
                    del self.servables[name][version]
                self._set_state(name, version, "END")
                log.info("unloaded %s version %s", name, version)

    def _set_state(self, name: str, version: int, state: str, message: str = "") -> None:
        with self._lock:  # request threads read the states while the poller writes them
            self.states[name][version] = (state, message)

    def poll_forever(self, seconds: float) -> None:
        def loop():
            while True:
                time.sleep(seconds)
                try:
                    self.scan()
                except Exception:  # keep polling whatever one scan met
                    log.exception("model scan failed")

        threading.Thread(target=loop, daemon=True, name="model-poller").start()

    def status(self, name: str, version: str | None, label: str | None) -> list[dict]:
        self._check_name(name)
        with self._lock:
            states = dict(self.states.get(name, {}))
        if label is not None:
            version = str(self._label_version(name, label))
        if version is not None:
            number = _version_number(version)
            if number not in states:
                raise ServingError(404, f"Could not find version {version} of model {name}")
            states = {number: states[number]}
        return [
            {"version": str(v), "state": state,
             "status": {"error_code": "OK" if not message else "UNKNOWN",
                        "error_message": message}}
            for v, (state, message) in sorted(states.items(), reverse=True)
        ]

    def find(self, name: str, version: str | None, label: str | None) -> Servable:
        self._check_name(name)
        with self._lock:
            versions = dict(self.servables.get(name, {}))
        if label is not None:
            number = self._label_version(name, label)
            request = f"Specific({name}, {number})"
        elif version is not None:
            number = _version_number(version)
            request = f"Specific({name}, {number})"
        else:
            number = max(versions) if versions else None
            request = f"Latest({name})"
        if number not in versions:
            raise ServingError(404, f"Servable not found for request: {request}")
        return versions[number]

    def _label_version(self, name: str, label: str) -> int:
        try:
            return self.version_labels[name][label]
        except KeyError:
            raise ServingError(404, f"Unrecognized servable version label: {label}") from None

    def _check_name(self, name: str) -> None:
        if not MODEL_NAME.match(name) or name not in self.states:
            raise ServingError(404, f"Servable not found for request: Latest({name})")


def _version_number(version: str) -> int:
    if not version.isdigit():
        raise ServingError(404, f"Servable not found: version {version!r} is not an integer")
    return int(version)


# ---------------------------------------------------------------------------------------------
# Requests and responses: the JSON mapping of TF Serving's predict API
# ---------------------------------------------------------------------------------------------


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_b64(name: str, value):
    """Leaves of a DT_STRING value -> bytes: text as UTF-8, {"b64": ...} decoded."""
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise ServingError(400, f"input '{name}': a {{\"b64\"}} value is not base64") from None
    if isinstance(value, list):
        return [_decode_b64(name, v) for v in value]
    if isinstance(value, str):
        return value.encode()
    kind = type(value).__name__
    raise ServingError(400, f"input '{name}': DT_STRING takes strings or b64 objects, not {kind}")


def to_tensor(name: str, value, spec) -> np.ndarray:
    """A JSON value -> numpy array of the signature's dtype and a compatible shape, or a 400."""
    dtype = spec.dtype.as_numpy_dtype
    try:
        if spec.dtype.name == "string":
            array = np.array(_decode_b64(name, value), dtype=object)
        else:
            if _contains_dict(value):
                raise ServingError(400, f"input '{name}': binary {{\"b64\"}} values need DT_STRING")
            array = np.array(value, dtype=dtype)
    except ServingError:
        raise
    except (ValueError, TypeError, OverflowError) as error:
        raise ServingError(
            400, f"input '{name}': cannot read as {spec.dtype.name} ({str(error).splitlines()[0]})"
        ) from None
    expected = spec.shape
    if expected.rank is not None and (
        array.ndim != expected.rank
        or any(want is not None and want != got for want, got in zip(expected, array.shape))
    ):
        shown = [d if d is not None else -1 for d in expected.as_list()]
        raise ServingError(
            400, f"input '{name}': shape {list(array.shape)} does not match the signature's {shown}"
        )
    return array


def _contains_dict(value) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, list) and any(_contains_dict(v) for v in value[:1])


def parse_predict(body: dict, signature: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """A predict request -> (inputs, row_format)."""
    if "instances" in body and "inputs" in body:
        raise ServingError(400, "Request must have either 'instances' or 'inputs', not both")
    if "instances" not in body and "inputs" not in body:
        raise ServingError(400, "Missing 'instances' or 'inputs' key")
    names = list(signature.inputs)
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ServingError(400, "'instances' must be a non-empty list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if named:
            for instance in instances:
                _check_names(set(instance), names)
            values = {n: [instance[n] for instance in instances] for n in names}
        elif len(names) == 1:
            values = {names[0]: instances}
        else:
            raise ServingError(400, f"each instance must be an object with inputs {names}")
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not _is_b64(inputs):
            _check_names(set(inputs), names)
            values = inputs
        elif len(names) == 1:
            values = {names[0]: inputs}
        else:
            raise ServingError(400, f"'inputs' must be an object with inputs {names}")
    tensors = {n: to_tensor(n, values[n], signature.inputs[n]) for n in names}
    if row_format and len({len(t) for t in tensors.values()}) > 1:
        raise ServingError(400, "row format needs every input to have the same 0-th dimension")
    return tensors, row_format


def _check_names(given: set, expected: list) -> None:
    unknown = sorted(given - set(expected))
    if unknown:
        raise ServingError(400, f"unknown input name(s) {unknown}; the signature takes {expected}")
    missing = sorted(set(expected) - given)
    if missing:
        raise ServingError(400, f"missing input(s) {missing}")


def _jsonable(name: str, value: np.ndarray):
    if value.dtype == object:  # DT_STRING: text, or base64 when the name says bytes
        as_bytes = name.endswith("_bytes")
        flat = [{"b64": base64.b64encode(v).decode()} if as_bytes else v.decode("utf-8", "replace")
                for v in value.ravel()]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    return value.tolist()


def format_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
    if row_format:
        if len(outputs) == 1:
            name, value = next(iter(outputs.items()))
            return {"predictions": _jsonable(name, value)}
        batch = {len(v) for v in outputs.values()}
        if len(batch) != 1:
            raise ServingError(400, "outputs differ in 0-th dimension; use the columnar format")
        columns = {name: _jsonable(name, value) for name, value in outputs.items()}
        return {"predictions": [{name: columns[name][i] for name in columns}
                                for i in range(batch.pop())]}
    if len(outputs) == 1:
        name, value = next(iter(outputs.items()))
        return {"outputs": _jsonable(name, value)}
    return {"outputs": {name: _jsonable(name, value) for name, value in outputs.items()}}


# ---------------------------------------------------------------------------------------------
# The HTTP application
# ---------------------------------------------------------------------------------------------

MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:[A-Za-z]+)?$"
)


def create_app(registry: ModelRegistry, max_body_bytes: int = MAX_BODY_BYTES):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
    )
    from starlette.concurrency import run_in_threadpool

    metrics = CollectorRegistry()
    request_count = Counter(
        ":tensorflow:serving:request_count", "Requests by model, API and status.",
        ["model_name", "API", "status"], registry=metrics,
    )
    request_latency = Histogram(
        ":tensorflow:serving:request_latency", "Request latency in seconds.",
        ["model_name", "API"], registry=metrics,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    app = FastAPI(title="TensorFlow-Serving-compatible REST API", docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def parse_path(path: str) -> dict:
        match = MODEL_PATH.match(path)
        if not match:
            raise ServingError(404, f"Malformed request: {path}")
        return match.groupdict()

    @app.get("/v1/models/{path:path}")
    async def get_model(path: str):
        try:
            parts = parse_path(path)
            if parts["rest"] is None:
                status = registry.status(parts["name"], parts["version"], parts["label"])
                return JSONResponse({"model_version_status": status})
            if parts["rest"] != "/metadata":
                raise ServingError(404, f"Malformed request: GET {path}")
            servable = registry.find(parts["name"], parts["version"], parts["label"])
            return JSONResponse({
                "model_spec": {"name": servable.name, "signature_name": "",
                               "version": str(servable.version)},
                "metadata": {"signature_def": {"signature_def": servable.signature_defs}},
            })
        except ServingError as failure:
            return error(failure.status, failure.message)

    @app.post("/v1/models/{path:path}")
    async def post_model(path: str, request: Request):
        started = time.perf_counter()
        model_name, status_label = "", "OK"
        try:
            parts = parse_path(path)
            model_name = parts["name"]
            if parts["rest"] != ":predict":
                raise ServingError(400, f"Unsupported request {path}: this server speaks :predict")
            declared = request.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_body_bytes:
                raise ServingError(413, f"Request body over {max_body_bytes} bytes")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    raise ServingError(413, f"Request body over {max_body_bytes} bytes")
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as failure:
                raise ServingError(400, f"JSON Parse error: {failure}") from None
            if not isinstance(payload, dict):
                raise ServingError(400, "The request body must be a JSON object")
            servable = registry.find(parts["name"], parts["version"], parts["label"])
            signature_name = payload.get("signature_name") or "serving_default"
            if signature_name not in servable.signatures:
                raise ServingError(
                    404, f"Serving signature name: \"{signature_name}\" not found in signature def"
                )
            signature = servable.signatures[signature_name]
            inputs, row_format = parse_predict(payload, signature)
            try:
                outputs = await run_in_threadpool(signature, inputs)
            except Exception as failure:  # e.g. an image that does not decode
                message = str(failure).strip().splitlines()[0] if str(failure) else "failed"
                raise ServingError(400, f"Prediction failed: {message}") from None
            return JSONResponse(format_predict(outputs, row_format))
        except ServingError as failure:
            status_label = str(failure.status)
            return error(failure.status, failure.message)
        finally:
            request_count.labels(model_name, "predict", status_label).inc()
            request_latency.labels(model_name, "predict").observe(time.perf_counter() - started)

    @app.get("/monitoring/prometheus/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    return app


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_labels(entries: list[str]) -> dict[str, dict[str, int]]:
    labels: dict[str, dict[str, int]] = {}
    for entry in entries:
        match = re.fullmatch(r"([^:]+):([^=]+)=(\d+)", entry)
        if not match:
            raise SystemExit(f"error: --version-label {entry}: expected MODEL:LABEL=VERSION")
        labels.setdefault(match[1], {})[match[2]] = int(match[3])
    return labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve the SavedModels under a folder with TensorFlow Serving's REST API.",
    )
    parser.add_argument("--model-base", type=Path, default=Path("saved_models"),
                        help="folder of <model>/<version>/ SavedModels (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument("--num-versions", type=int, default=1,
                        help="serve the newest N versions of each model (default: %(default)s)")
    parser.add_argument("--version-label", action="append", default=[],
                        metavar="MODEL:LABEL=VERSION",
                        help="name a version, e.g. digit_ocr:stable=3 (repeatable)")
    parser.add_argument("--batching", action="store_true",
                        help="merge concurrent requests to a model into one call")
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE,
                        help="rows per merged call (default: %(default)s)")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help="how long a request waits for others (default: %(default)s)")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS,
                        help="how often to look for new versions (default: %(default)s)")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                        help="larger request bodies get 413 (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not args.model_base.is_dir():
        raise SystemExit(f"error: --model-base {args.model_base}: no such folder")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads the first model
    import uvicorn

    batching = ({"max_batch_size": args.max_batch_size, "timeout_ms": args.batch_timeout_ms}
                if args.batching else None)
    registry = ModelRegistry(args.model_base, args.num_versions, batching,
                             parse_labels(args.version_label))
    registry.scan()
    registry.poll_forever(args.poll_seconds)
    log.info("models: %s", ", ".join(sorted(registry.servables)) or "none yet")
    uvicorn.run(create_app(registry, int(args.max_body_mb * 2**20)), host=args.host,
                port=args.port, log_level=args.log_level, access_log=args.log_level == "debug")


if __name__ == "__main__":
    main()
