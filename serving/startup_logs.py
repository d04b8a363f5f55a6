"""A quiet start: TensorFlow's and LiteRT's C++ start-up log kept off the user's terminal.

When their shared libraries load, TensorFlow and LiteRT write straight to file descriptor 2,
before absl's logging is initialised, so `TF_CPP_MIN_LOG_LEVEL` does not reach those lines:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your machine, ...

on every command of a machine without a GPU, once for each library. `quiet_startup()` sends
descriptor 2 to a temporary file while a library loads and then prints what was written there,
less those known start-up lines: anything else (a real warning, an error) still reaches the
user. DEEP_ARCHITECTURES_TF_LOGS=1 shows everything, TensorFlow's INFO log included.
"""

import contextlib
import os
import re
import sys
import tempfile

SHOW_ALL = os.environ.get("DEEP_ARCHITECTURES_TF_LOGS", "") not in ("", "0")

# What every CPU-only start (and an int8 conversion) prints; nothing the user can act on.
STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\)"
    r"|oneDNN custom operations are on"
    r"|cudart_stub\.cc.*Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|Created TensorFlow Lite XNNPACK delegate for CPU"
    r"|fully_quantize: \d+, inference_type: \d+"  # the int8 converter's settings
)

# TensorFlow's own log after start-up: off but for fatal errors (its warnings are about its
# internals, e.g. "Local rendezvous is aborting ... End of sequence" at every dataset's end).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if SHOW_ALL else "3")


@contextlib.contextmanager
def quiet_startup():
    """Descriptor 2 into a temporary file for the block; then its lines, less the start-up
    noise, onto stderr."""
    if SHOW_ALL:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()  # Python's own writes in the block go to the file too
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not STARTUP_NOISE.search(line):
                    print(line, file=sys.stderr)
