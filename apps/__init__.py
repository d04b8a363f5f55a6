"""The task-oriented apps; each runs as `python -m apps.<task> <command> [options]`."""

from serving.startup_logs import quiet_startup

# Every app uses TensorFlow: loaded here, once, without its C++ start-up log (see
# serving/startup_logs.py; DEEP_ARCHITECTURES_TF_LOGS=1 shows it).
with quiet_startup():
    import tensorflow  # noqa: F401
