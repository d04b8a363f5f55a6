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
    GET  /                                                         a web page with a panel per
                                                                   model, for people (serving/
                                                                   playground.py)

Version policy "latest" (TF Serving's default), following the disk both ways: the newest complete
version of each model is served (`--num-versions N` keeps the newest N), a new integer directory
is loaded without a restart, a version whose directory disappears is unloaded, a number that
reappears with other files is loaded again, and a version that fails to load (still being copied)
is tried again on every poll that finds its files changed. `--batching` merges concurrent
requests to one model into one call, up to `--max-batch-size` rows or `--batch-timeout-ms`, as TF
Serving's `--enable_batching` does.

No client can fail or stall another's request: each request is read, checked against the
signature and converted on its own (in a worker thread, not on the event loop) before it joins a
batch; a batch that fails is run again request by request, so that only the bad one fails;
`--max-instances` bounds a request's size. Every error is `{"error": "..."}` with a 4xx status
that names the input and the problem (a 5xx only for a fault of the server itself).
"""

import argparse
import base64
import gc
import ipaddress
import json
import logging
import queue
import re
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving import playground
from serving.startup_logs import quiet_startup

log = logging.getLogger("serving.server")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no separators: cannot leave the base
DEFAULT_PORT = 8501
POLL_SECONDS = 1.0  # as TF Serving's --file_system_poll_wait_seconds
MAX_BODY_BYTES = 32 * 1024 * 1024
# Instances in one request. A 1,000-instance gan_cgan request (2 MB in, 4.5 MB out) is answered
# in 0.4 s on 2 cores; ten times that took 21-24 s and 700 MB more memory, and one request gains
# nothing over ten, between which other clients' requests get their turn.
MAX_INSTANCES = 1000
# Failed loads of a version whose files do not change before it is given up (logged). A version
# still being copied changes between polls, which starts the count again: it is tried until it
# loads. As TF Serving's --max_num_load_retries, but counted on unchanged files.
MAX_LOAD_ATTEMPTS = 5
MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_MS = 2.0
MAX_NESTING = 32  # lists in a value of a signature input of unknown rank
ENCODE_CHUNK = 8192  # values per json.dumps call: other threads run between the calls
# A thread waiting for the interpreter lock gets it from a thread that computes after this long
# (Python's default: 5 ms). A small request takes the lock a few times on its way through; while
# a large request's JSON is read or written, it would wait 5 ms each time (its p99 beside a
# 1,000-instance request: 57-84 ms at 5 ms, 19-20 ms at 1 ms, on 2 cores).
SWITCH_INTERVAL_S = 0.001
# Objects allocated between two young collections of the garbage collector (Python's default:
# 700). A 1,000-instance request makes a million lists on its way through; at 700 they set off
# young and full collections that took 40% of its time (0.6 s -> 0.37 s with 50,000).
GC_YOUNG_OBJECTS = 50_000
UNKNOWN_MODEL = "(unknown)"  # the metrics label of every name that is not a model: not a name
# The "status" label of the request counter, as TF Serving fills it: the error code's name.
STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED",
                500: "INTERNAL"}


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
        # A request as large as a batch has nobody to share a call with: it runs in its own
        # thread, not in the batcher's, where the requests queued behind it would wait for it.
        if self.batcher is not None and _rows(inputs) < self.batcher.max_batch_size:
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
    files: tuple = ()  # `files_identity` of the directory it was loaded from

    def close(self) -> None:
        for signature in self.signatures.values():
            if signature.batcher is not None:
                signature.batcher.close()


def is_complete_saved_model(version_dir: Path) -> bool:
    return (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()


def files_identity(version_dir: Path) -> tuple:
    """Changes when another export takes the directory's place under the same number."""
    directory, graph = version_dir.stat(), (version_dir / "saved_model.pb").stat()
    return directory.st_ino, graph.st_ino, graph.st_size, graph.st_mtime_ns


def files_fingerprint(version_dir: Path) -> tuple:
    """Changes while files are copied into the directory."""
    return tuple(sorted((str(path.relative_to(version_dir)), stat.st_size, stat.st_mtime_ns)
                        for path in version_dir.rglob("*")
                        if path.is_file() and (stat := path.stat())))


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

    files = files_identity(version_dir)
    model = tf.saved_model.load(str(version_dir))
    signatures = {}
    for key, function in model.signatures.items():
        _, input_specs = function.structured_input_signature
        signature = Signature(key, function, dict(input_specs))
        if batching and all(spec.shape.rank and spec.shape[0] is None
                            for spec in input_specs.values()):
            signature.batcher = Batcher(signature.run, **batching)
        signatures[key] = signature
    return Servable(name, version, signatures, signature_defs_as_json(version_dir), model, files)


# ---------------------------------------------------------------------------------------------
# Dynamic batching
# ---------------------------------------------------------------------------------------------

CLOSE = object()  # put on a batcher's queue: its thread ends after the requests queued before


class Batcher:
    """Merges concurrent calls into one: the first request waits at most `timeout_ms` for others
    to join, up to `max_batch_size` rows, then all run as one batch and each gets its rows back.

    Unlike a fixed timeout, it never waits when no other call is in flight: a lone client pays
    no batching latency, and batches form exactly when requests queue up behind the model.

    A batch holds requests that were each checked on their own, but the graph can still refuse
    one (an image that does not decode, a label past the embedding): the whole call fails, and
    each request of it is then run alone, so that only the bad one fails.
    """

    def __init__(self, run, max_batch_size: int = MAX_BATCH_SIZE,
                 timeout_ms: float = BATCH_TIMEOUT_MS):
        self.run = run
        self.max_batch_size = max_batch_size
        self.timeout = timeout_ms / 1000.0
        self.requests: queue.Queue = queue.Queue()
        self.in_flight = 0
        self.closed = False
        self._count_lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True, name="batcher").start()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        future: Future = Future()
        with self._count_lock:
            queued = not self.closed
            if queued:
                self.in_flight += 1
                self.requests.put((inputs, future))
        if not queued:  # its version was unloaded while this request held it
            return self.run(inputs)
        try:
            return future.result()
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def close(self) -> None:
        with self._count_lock:
            self.closed = True
            self.requests.put(CLOSE)

    def _serve(self) -> None:
        held = None  # a request taken from the queue that did not fit into the last batch
        while True:
            first = held if held is not None else self.requests.get()
            held = None
            if first is CLOSE:
                return
            batch, rows = [first], _rows(first[0])
            deadline = time.monotonic() + self.timeout
            while rows < self.max_batch_size and self.in_flight > len(batch):
                try:
                    item = self.requests.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is CLOSE or rows + _rows(item[0]) > self.max_batch_size:
                    held = item
                    break
                batch.append(item)
                rows += _rows(item[0])
            self._run(batch)

    def _run(self, batch) -> None:
        if len(batch) == 1 or not _stackable([inputs for inputs, _ in batch]):
            self._run_each(batch)
            return
        sizes = [_rows(inputs) for inputs, _ in batch]
        merged = {name: np.concatenate([inputs[name] for inputs, _ in batch])
                  for name in batch[0][0]}
        try:
            outputs = self.run(merged)
        except Exception:
            self._run_each(batch)
            return
        offsets = np.cumsum([0, *sizes])
        if any(np.shape(value)[:1] != (offsets[-1],) for value in outputs.values()):
            self._run_each(batch)  # an output that is not one row per input row cannot be split
            return
        for (_, future), start, stop in zip(batch, offsets[:-1], offsets[1:]):
            future.set_result({name: value[start:stop] for name, value in outputs.items()})

    def _run_each(self, batch) -> None:
        for inputs, future in batch:
            try:
                future.set_result(self.run(inputs))
            except Exception as error:
                future.set_exception(error)


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


# ---------------------------------------------------------------------------------------------
# The model registry: what is under the base, what is loaded, what changed
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadFailure:
    fingerprint: tuple  # `files_fingerprint` of the files that did not load
    attempts: int


class ModelRegistry:
    """Scans `base` every `poll_seconds` and serves what is there: the newest `num_versions`
    complete versions of each model, for as long as their directories hold the files loaded."""

    def __init__(self, base: Path, num_versions: int = 1, batching: dict | None = None,
                 version_labels: dict[str, dict[str, int]] | None = None):
        self.base = base
        self.num_versions = num_versions
        self.batching = batching
        self.version_labels = version_labels or {}
        self.servables: dict[str, dict[int, Servable]] = {}
        self.states: dict[str, dict[int, tuple[str, str]]] = {}  # (state, error message)
        self._warned: set[Path] = set()
        self._failures: dict[tuple[str, int], LoadFailure] = {}
        self._lock = threading.Lock()
        self._loaded = self._unloaded = False  # in this scan

    def scan(self) -> None:
        found = set()
        for model_dir in sorted(self.base.iterdir()):
            if model_dir.is_dir() and MODEL_NAME.match(model_dir.name):
                found.add(model_dir.name)
                self._scan_model(model_dir.name, model_dir)
        for name in sorted(set(self.states) - found):  # the whole model directory is gone
            self._scan_model(name, None)
        # The loaded models are millions of objects that live as long as they are served. Kept
        # out of the garbage collector's sight (frozen), its full collections, which hold the
        # interpreter lock, look at the requests' objects only (10 ms, not 40 to 200 ms).
        # What an unloaded model leaves is thawed and collected once, here in the poller.
        if self._unloaded:
            gc.unfreeze()
            gc.collect()
        if self._loaded or self._unloaded:
            gc.freeze()
        self._loaded = self._unloaded = False

    def _scan_model(self, name: str, model_dir: Path | None) -> None:
        try:
            on_disk = self._complete_versions(model_dir) if model_dir is not None else {}
            with self._lock:
                states = dict(self.states.setdefault(name, {}))
                loaded = dict(self.servables.setdefault(name, {}))
            for version in sorted(on_disk)[-self.num_versions :]:
                servable = loaded.get(version)  # or another export under the same number:
                if servable is None or servable.files != files_identity(on_disk[version]):
                    self._load(name, version, on_disk[version])
            # What the disk no longer has is not served: a version directory removed (a
            # rollback: the version before is loaded above first) or never completed.
            for version in sorted(set(loaded) - set(on_disk)):
                self._unload(name, version, "its directory is gone")
            for version, (state, _) in states.items():
                if version not in on_disk and version not in loaded and state != "END":
                    self._failures.pop((name, version), None)
                    self._set_state(name, version, "END")
            # Of the versions loaded, the newest `num_versions` stay: an older version is
            # served until a newer one has loaded.
            with self._lock:
                older = sorted(self.servables[name])[: -self.num_versions]
            for version in older:
                self._unload(name, version, "a newer version is served")
        except OSError as error:  # a directory renamed or removed while it was read
            log.warning("scanning %s: %s; the next scan looks again", name, error)

    def _complete_versions(self, model_dir: Path) -> dict[int, Path]:
        complete = {}
        for version_dir in model_dir.iterdir():
            if not (version_dir.name.isdigit() and version_dir.is_dir()):
                continue  # temporary export directories, assets.extra and the like
            if is_complete_saved_model(version_dir):
                complete[int(version_dir.name)] = version_dir
            elif version_dir not in self._warned:
                self._warned.add(version_dir)
                log.warning("skipping %s: not a complete SavedModel", version_dir)
        return complete

    def _load(self, name: str, version: int, version_dir: Path) -> None:
        fingerprint = files_fingerprint(version_dir)
        failure = self._failures.get((name, version))
        if failure is not None and failure.fingerprint != fingerprint:
            failure = None  # its files changed: still being copied, or copied again
        if failure is not None and failure.attempts >= MAX_LOAD_ATTEMPTS:
            return
        with self._lock:
            replacing = version in self.servables[name]
        if not replacing:
            self._set_state(name, version, "LOADING")
        try:
            servable = load_servable(name, version, version_dir, self.batching)
        except Exception as error:  # a broken model must not take the server down
            attempts = failure.attempts + 1 if failure is not None else 1
            self._failures[name, version] = LoadFailure(fingerprint, attempts)
            if replacing:
                self._unload(name, version, "replaced by files that do not load")
            message = f"failed to load: {str(error).strip().splitlines()[0]}"
            if attempts < MAX_LOAD_ATTEMPTS:
                self._set_state(name, version, "LOADING", message)
                log.warning("%s/%s (attempt %d): %s", name, version, attempts, message)
            else:
                self._set_state(name, version, "END", message)
                log.warning("%s/%s: %s; given up after %d attempts on the same files, tried "
                            "again when they change", name, version, message, attempts)
            return
        self._failures.pop((name, version), None)
        with self._lock:
            replaced = self.servables[name].get(version)
            self.servables[name][version] = servable
            self.states[name][version] = ("AVAILABLE", "")
        if replaced is not None:
            replaced.close()
            self._unloaded = True
        self._loaded = True
        log.info("serving %s version %s", name, version)

    def _unload(self, name: str, version: int, why: str) -> None:
        with self._lock:
            servable = self.servables[name].pop(version)
            self.states[name][version] = ("END", "")
        servable.close()
        self._unloaded = True
        log.info("unloaded %s version %s: %s", name, version, why)

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

    def latest(self) -> dict[str, Servable]:
        """The newest version served of each model that has one, by name."""
        with self._lock:
            return {name: versions[max(versions)]
                    for name, versions in sorted(self.servables.items()) if versions}

    def knows(self, name: str) -> bool:
        """Whether `name` is a model directory this registry has seen."""
        with self._lock:
            return name in self.states

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
        if not MODEL_NAME.match(name) or not self.knows(name):
            raise ServingError(404, f"Servable not found for request: Latest({name})")


def _version_number(version: str) -> int:
    if not version.isdigit():
        raise ServingError(404, f"Servable not found: version {version!r} is not an integer")
    return int(version)


# ---------------------------------------------------------------------------------------------
# Requests and responses: the JSON mapping of TF Serving's predict API
# ---------------------------------------------------------------------------------------------

# What a JSON value of each kind of tensor may hold, as the types json.loads gives.
JSON_LEAVES = {"f": ({int, float}, "numbers"), "c": ({int, float}, "numbers"),
               "i": ({int}, "integers"), "u": ({int}, "integers"), "b": ({bool}, "true or false")}
JSON_NAMES = {str: "strings", bool: "true/false", type(None): "null", dict: "objects",
              float: "numbers with a fraction or exponent", int: "integers"}


def parse_json(body: bytes):
    try:
        text = body.decode()
        value, end = _json_value(text, 0)
        if _SPACE.match(text, end).end() != len(text):
            raise ValueError(f"Extra data: char {end}")
        return value
    except RecursionError:
        raise ServingError(400, "JSON Parse error: the document is nested too deep") from None
    except ValueError as failure:  # UnicodeDecodeError included
        raise ServingError(400, f"JSON Parse error: {failure}") from None


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _json_value(text: str, at: int):
    """The JSON value at `at`, and where it ends. As json.loads, but the elements of an array
    (each instance, each row of an input) are read one call each: one json.loads of a 2 MB
    request holds the interpreter lock for 50 ms, which every other request waits out."""
    at = _SPACE.match(text, at).end()
    if text.startswith("{", at):
        members, at = {}, _SPACE.match(text, at + 1).end()
        if text.startswith("}", at):
            return members, at + 1
        while True:
            if not text.startswith('"', at):
                raise ValueError(f"Expecting property name enclosed in double quotes: char {at}")
            key, at = json.decoder.scanstring(text, at + 1)
            at = _SPACE.match(text, at).end()
            if not text.startswith(":", at):
                raise ValueError(f"Expecting ':' delimiter: char {at}")
            members[key], at = _json_value(text, at + 1)
            at = _SPACE.match(text, at).end()
            if text.startswith("}", at):
                return members, at + 1
            if not text.startswith(",", at):
                raise ValueError(f"Expecting ',' delimiter: char {at}")
            at = _SPACE.match(text, at + 1).end()
    if text.startswith("[", at):
        items, at = [], _SPACE.match(text, at + 1).end()
        if text.startswith("]", at):
            return items, at + 1
        while True:
            item, at = _DECODER.raw_decode(text, at)
            items.append(item)
            at = _SPACE.match(text, at).end()
            if text.startswith("]", at):
                return items, at + 1
            if not text.startswith(",", at):
                raise ValueError(f"Expecting ',' delimiter: char {at}")
            at = _SPACE.match(text, at + 1).end()
    return _DECODER.raw_decode(text, at)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


class TooDeep(Exception):
    """Lists nested deeper than the signature's rank: a shape error, found before recursing on."""


def _strings(name: str, value, depth: int):
    """Nested lists of a DT_STRING value -> of bytes: text as UTF-8, {"b64": ...} decoded."""
    if type(value) is list:
        if depth == 0:
            raise TooDeep
        return [_strings(name, v, depth - 1) for v in value]
    if type(value) is str:
        return value.encode()
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError):
            raise ServingError(400, f"input '{name}': a {{\"b64\"}} value is not base64") from None
    kind = JSON_NAMES.get(type(value), type(value).__name__)
    raise ServingError(400, f"input '{name}': string takes strings or {{\"b64\"}} objects, "
                            f"not {kind}")


def _leaf_types(value, depth: int) -> set[type]:
    """The types of the values in nested lists, which may nest at most `depth` deep."""
    if type(value) is not list:
        return {type(value)}
    if depth == 0:
        raise TooDeep
    kinds = set(map(type, value))
    if list in kinds:
        kinds.discard(list)
        for item in value:
            if type(item) is list:
                kinds |= _leaf_types(item, depth - 1)
    return kinds


def to_tensor(name: str, value, spec) -> np.ndarray:
    """A JSON value -> numpy array of the signature's dtype and a compatible shape, or a 400.

    Strict as TF Serving is: a float takes numbers only (not "3.2", true or null) and finite
    ones (not NaN, Infinity or 1e400, nor a number past the dtype's range); an integer takes
    integers only (not 3.7), within the dtype's range."""
    dtype = np.dtype(spec.dtype.as_numpy_dtype)
    depth = spec.shape.rank if spec.shape.rank is not None else MAX_NESTING
    try:
        if spec.dtype.name == "string":
            return _shaped(name, np.array(_strings(name, value, depth), dtype=object), spec)
        kinds = _leaf_types(value, depth)
    except TooDeep:
        raise ServingError(400, f"input '{name}': lists nested deeper than its shape "
                                f"{_shown(spec)}") from None
    allowed, described = JSON_LEAVES.get(dtype.kind, ({int, float}, "numbers"))
    wrong = kinds - allowed
    if dict in wrong:
        raise ServingError(400, f"input '{name}': binary {{\"b64\"}} values need DT_STRING")
    if wrong:
        wrong_kinds = ", ".join(sorted(JSON_NAMES.get(kind, kind.__name__) for kind in wrong))
        raise ServingError(400, f"input '{name}': {spec.dtype.name} takes {described}, "
                                f"not {wrong_kinds}")
    try:
        with np.errstate(over="ignore"):  # a float past the dtype's range: checked below
            array = np.array(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as error:
        reason = str(error).splitlines()[0]  # ragged lists, an integer past the range
        raise ServingError(400, f"input '{name}': cannot read as {spec.dtype.name} ({reason})"
                           ) from None
    if dtype.kind in "fc" and not np.isfinite(array).all():
        raise ServingError(400, f"input '{name}': {spec.dtype.name} takes finite numbers only "
                                "(not NaN, Infinity or a number past its range)")
    return _shaped(name, array, spec)


def _shaped(name: str, array: np.ndarray, spec) -> np.ndarray:
    expected = spec.shape
    if expected.rank is not None and (
        array.ndim != expected.rank
        or any(want is not None and want != got for want, got in zip(expected, array.shape))
    ):
        raise ServingError(400, f"input '{name}': shape {list(array.shape)} does not match the "
                                f"signature's {_shown(spec)}")
    return array


def _shown(spec) -> str:
    if spec.shape.rank is None:
        return "(any shape)"
    return str([d if d is not None else -1 for d in spec.shape.as_list()])


def parse_predict(body: dict, signature: Signature,
                  max_instances: int = MAX_INSTANCES) -> tuple[dict[str, np.ndarray], bool]:
    """A predict request -> (inputs, row_format)."""
    if "instances" in body and "inputs" in body:
        raise ServingError(400, "Request must have either 'instances' or 'inputs', not both")
    if "instances" not in body and "inputs" not in body:
        raise ServingError(400, "Missing 'instances' or 'inputs' key")
    names = list(signature.inputs)
    row_format = "instances" in body
    if row_format:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServingError(400, "'instances' must be a list")
        _check_instances(len(instances), max_instances)
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
        for value in values.values():
            _check_instances(len(value) if isinstance(value, list) else 1, max_instances)
    tensors = {n: to_tensor(n, values[n], signature.inputs[n]) for n in names}
    if row_format and len({len(t) for t in tensors.values()}) > 1:
        raise ServingError(400, "row format needs every input to have the same 0-th dimension")
    return tensors, row_format


def _check_instances(count: int, max_instances: int) -> None:
    # Both formats: `{"instances": []}` and `{"inputs": {"x": []}}` ask for nothing alike.
    if count == 0:
        raise ServingError(400, "The request has no instances: send at least one")
    if count > max_instances:
        raise ServingError(400, f"The request has {count} instances, over the limit of "
                                f"{max_instances} (--max-instances): split it into smaller ones")


def _check_names(given: set, expected: list) -> None:
    unknown = sorted(given - set(expected))
    if unknown:
        raise ServingError(400, f"unknown input name(s) {unknown}; the signature takes {expected}")
    missing = sorted(set(expected) - given)
    if missing:
        raise ServingError(400, f"missing input(s) {missing}")


def run_signature(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs, or a 400 that says what the graph refused and why."""
    import tensorflow as tf

    try:
        outputs = signature(inputs)
    except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError,
            TypeError) as failure:  # e.g. an image that does not decode, a label past the table
        where = f" for input '{next(iter(inputs))}'" if len(inputs) == 1 else ""
        raise ServingError(400, f"Prediction failed{where}: {_reason(failure)}") from None
    for name, value in outputs.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise ServingError(400, f"Prediction failed: output '{name}' is not finite (NaN or "
                                    "infinity) for this input, which is outside what the model "
                                    "can answer")
    return outputs


def _reason(failure: Exception) -> str:
    """The line of a TensorFlow error that says what went wrong: not 'Graph execution error:',
    the function, the node or the stack, but e.g. 'Unknown image file format. One of JPEG, ...
    required.' or 'indices[0] = 10 is not in [0, 10)'."""
    lines = [re.sub(r"\{\{[^}]*\}\}", "", line).strip()  # {{function_node ...}} {{node ...}}
             for line in str(getattr(failure, "message", failure)).splitlines()]
    node = next((i for i, line in enumerate(lines) if line.startswith("[[")), len(lines))
    said = [line for line in lines[:node] if line]
    return said[-1] if said else type(failure).__name__


def _jsonable(name: str, value: np.ndarray):
    if value.dtype == object:  # DT_STRING: text, or base64 when the name says bytes
        as_bytes = name.endswith("_bytes")
        flat = [{"b64": base64.b64encode(v).decode()} if as_bytes else v.decode("utf-8", "replace")
                for v in value.ravel()]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    return value.tolist()


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _encode(name: str, value: np.ndarray) -> str:
    """`value` as JSON text, built ENCODE_CHUNK values at a time: a 30 MB response encoded in
    one call would hold the interpreter (and every other request) for a second."""
    if value.ndim == 0 or value.size <= ENCODE_CHUNK:
        return _dumps(_jsonable(name, value))
    if value.ndim == 1:
        pieces = (_dumps(_jsonable(name, value[i : i + ENCODE_CHUNK]))[1:-1]
                  for i in range(0, len(value), ENCODE_CHUNK))
    else:
        pieces = (_encode(name, row) for row in value)
    return "[" + ",".join(pieces) + "]"


def encode_predict(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """The response body, shaped as TF Serving shapes it."""
    if row_format and len(outputs) > 1:
        batch = {value.shape[0] if value.ndim else None for value in outputs.values()}
        if len(batch) != 1 or None in batch:
            raise ServingError(400, "outputs differ in 0-th dimension; use the columnar format")
        rows = ("{" + ",".join(f"{_dumps(name)}:{_encode(name, value[i, ...])}"
                               for name, value in outputs.items()) + "}"
                for i in range(batch.pop()))
        text = '{"predictions":[' + ",".join(rows) + "]}"
    elif len(outputs) == 1:
        name, value = next(iter(outputs.items()))
        key = "predictions" if row_format else "outputs"
        text = "{" + _dumps(key) + ":" + _encode(name, value) + "}"
    else:
        columns = ",".join(f"{_dumps(name)}:{_encode(name, value)}"
                           for name, value in outputs.items())
        text = '{"outputs":{' + columns + "}}"
    return text.encode()


def predict(registry: ModelRegistry, parts: dict, body: bytes, max_instances: int) -> bytes:
    """A whole :predict request, body to response body: run in a worker thread, so that
    parsing, checking and encoding a large request delay that request only."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ServingError(400, "The request body must be a JSON object")
    servable = registry.find(parts["name"], parts["version"], parts["label"])
    signature_name = payload.get("signature_name") or "serving_default"
    if not isinstance(signature_name, str):
        raise ServingError(400, "'signature_name' must be a string")
    if signature_name not in servable.signatures:
        raise ServingError(
            404, f"Serving signature name: \"{signature_name}\" not found in signature def"
        )
    signature = servable.signatures[signature_name]
    inputs, row_format = parse_predict(payload, signature, max_instances)
    return encode_predict(run_signature(signature, inputs), row_format)


# ---------------------------------------------------------------------------------------------
# The HTTP application
# ---------------------------------------------------------------------------------------------

MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<rest>/metadata|:[A-Za-z]+)?$"
)


def create_app(registry: ModelRegistry, max_body_bytes: int = MAX_BODY_BYTES,
               max_instances: int = MAX_INSTANCES, openapi: bool = False):
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
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

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
    # The API's description lists every route to whoever asks: served when asked for only.
    app = FastAPI(title="TensorFlow-Serving-compatible REST API",
                  openapi_url="/openapi.json" if openapi else None,
                  docs_url="/docs" if openapi else None, redoc_url=None)

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def route_error(request: Request, failure: HTTPException):
        # No such route, or a method the route does not take: {"error"} as everywhere else.
        return error(failure.status_code, f"{failure.detail}: {request.method} {request.url.path}",
                     failure.headers)

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

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise ServingError(413, f"Request body over {max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise ServingError(413, f"Request body over {max_body_bytes} bytes")
        return bytes(body)

    @app.post("/v1/models/{path:path}")
    async def post_model(path: str, request: Request):
        started = time.perf_counter()
        model_label, outcome = UNKNOWN_MODEL, "OK"
        try:
            parts = parse_path(path)
            if registry.knows(parts["name"]):
                model_label = parts["name"]  # other names share one label: the set stays small
            if parts["rest"] != ":predict":
                raise ServingError(400, f"Unsupported request {path}: this server speaks :predict")
            body = await read_body(request)
            answer = await run_in_threadpool(predict, registry, parts, body, max_instances)
            return Response(answer, media_type="application/json")
        except ServingError as failure:
            outcome = STATUS_NAMES.get(failure.status, str(failure.status))
            return error(failure.status, failure.message)
        except ClientDisconnect:  # nobody to answer
            outcome = "CANCELLED"
            return Response(status_code=499)
        except Exception:
            outcome = STATUS_NAMES[500]
            log.exception("POST /v1/models/%s failed", path[:200])
            return error(500, "Internal error: the server could not answer; its log says why")
        finally:
            request_count.labels(model_label, "predict", outcome).inc()
            request_latency.labels(model_label, "predict").observe(time.perf_counter() - started)

    @app.get("/monitoring/prometheus/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    playground.add_routes(app, registry)
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


def exposure_warning(host: str) -> str | None:
    """What to say when the server listens beyond this machine, or None when it does not."""
    try:
        if host == "localhost" or ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass  # a host name: it may resolve to any interface
    return (f"--host {host}: this API has no authentication: whoever reaches the address can "
            "call every model and read its signatures. Keep it on 127.0.0.1 behind a proxy that "
            "authenticates, or allow only trusted clients through the firewall.")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="Serve the SavedModels under a folder with TensorFlow Serving's REST API, "
                    "and a web page at / to try each of them in a browser.",
    )
    parser.add_argument("--model-base", type=Path, default=Path("saved_models"),
                        help="folder of <model>/<version>/ SavedModels (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: %(default)s, this machine only; the API "
                             "has no authentication)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument("--num-versions", type=positive_int, default=1,
                        help="serve the newest N versions of each model (default: %(default)s)")
    parser.add_argument("--version-label", action="append", default=[],
                        metavar="MODEL:LABEL=VERSION",
                        help="name a version, e.g. digit_ocr:stable=3 (repeatable)")
    parser.add_argument("--batching", action="store_true",
                        help="merge concurrent requests to a model into one call")
    parser.add_argument("--max-batch-size", type=positive_int, default=MAX_BATCH_SIZE,
                        help="rows per merged call (default: %(default)s)")
    parser.add_argument("--batch-timeout-ms", type=float, default=BATCH_TIMEOUT_MS,
                        help="how long a request waits for others (default: %(default)s)")
    parser.add_argument("--max-instances", type=positive_int, default=MAX_INSTANCES,
                        help="a request with more instances gets 400 (default: %(default)s)")
    parser.add_argument("--poll-seconds", type=float, default=POLL_SECONDS,
                        help="how often to look for new versions (default: %(default)s)")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20,
                        help="larger request bodies get 413 (default: %(default)s)")
    parser.add_argument("--openapi", action="store_true",
                        help="serve the API's description at /openapi.json and /docs")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not args.model_base.is_dir():
        raise SystemExit(f"error: --model-base {args.model_base}: no such folder")
    if warning := exposure_warning(args.host):
        log.warning(warning)
    with quiet_startup():  # TensorFlow's C++ start-up lines, before the first model loads
        import tensorflow  # noqa: F401
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(GC_YOUNG_OBJECTS, *gc.get_threshold()[1:])
    import uvicorn

    batching = ({"max_batch_size": args.max_batch_size, "timeout_ms": args.batch_timeout_ms}
                if args.batching else None)
    registry = ModelRegistry(args.model_base, args.num_versions, batching,
                             parse_labels(args.version_label))
    registry.scan()
    registry.poll_forever(args.poll_seconds)
    log.info("models: %s", ", ".join(sorted(registry.servables)) or "none yet")
    app = create_app(registry, int(args.max_body_mb * 2**20), args.max_instances, args.openapi)
    log.info("web page: http://%s:%d/", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.log_level == "debug")


if __name__ == "__main__":
    main()
