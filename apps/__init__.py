"""The task-oriented apps; each runs as `python -m apps.<task> <command> [options]`."""

import os

# Before TensorFlow is imported by any app: keep its C++ start-up chatter (CUDA probing on CPU
# machines, oneDNN notices) off the user's terminal. Errors still surface as Python exceptions;
# set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
