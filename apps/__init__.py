"""The task-oriented apps; each runs as `python -m apps.<task> <command> [options]`."""
