"""Train/serve skew: each app's held-out examples, sent as a user sends them, through every served
path, beside the figure `evaluate` gives on the same examples.

    python -m bench.skew                      # every app at its `make demo` size, embedded data
    python -m bench.skew --mnist              # LeNet-5 and lenet5-modern, 3 epochs on real MNIST
    python -m bench.skew --apps digit_ocr fraud

Each app's `served_figures(version_dir, run_dir)` does the sending and the scoring; this trains
each app into a temporary directory, exports it there, and prints one table.
"""

import argparse
import importlib
import tempfile
import time
from pathlib import Path

from apps import runner
from bench import SHARED_DATA, save_results

MNIST = SHARED_DATA / "mnist"
MNIST_EPOCHS = 3
MNIST_MODELS = ("lenet5", "lenet5-modern")


def demo_config(app: str, run_dir: Path):
    """The app's `make demo` schedule, trained into `run_dir`; not marked as the user's last run."""
    module = importlib.import_module(f"apps.{app}")
    schedule = {**getattr(module, "QUICK", {}), **({"model": "cgan"} if app == "gan" else {})}
    return module.TrainConfig(**schedule, run_dir=run_dir, verbose=0, mark_last=False)


def skew_rows(app: str, config, workdir: Path) -> list[dict]:
    module = importlib.import_module(f"apps.{app}")
    started = time.perf_counter()
    module.train(config)
    report = module.export(config.run_dir, workdir / "saved_models", quiet=True)
    rows = module.served_figures(Path(report["saved_model"]), config.run_dir)
    print(f"{app}: {time.perf_counter() - started:.0f} s")
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m bench.skew",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--apps", nargs="+",
                        default=["digit_ocr", "gan", "fraud", "translation", "captioning"])
    parser.add_argument("--mnist", action="store_true",
                        help=f"LeNet-5 models trained {MNIST_EPOCHS} epochs on {MNIST} instead")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        if args.mnist:
            if not MNIST.is_dir():
                print(f"skipped: {MNIST} is not here")
                return []
            from apps import digit_ocr

            for model_name in MNIST_MODELS:
                config = digit_ocr.TrainConfig(data=str(MNIST), model=model_name,
                                               epochs=MNIST_EPOCHS, verbose=2,
                                               run_dir=workdir / model_name, mark_last=False)
                rows += [row | {"model": model_name}
                         for row in skew_rows("digit_ocr", config, workdir)]
        else:
            for app in args.apps:
                rows += skew_rows(app, demo_config(app, workdir / app), workdir)
    runner.print_table([{**{"model": row.get("model", "")}, "app": row["app"],
                         "path": row["path"], "figure": row["figure"],
                         "value": f"{row['value']:.4f}", "examples": row["examples"]}
                        for row in rows])
    save_results("skew-mnist" if args.mnist else "skew", {"rows": rows})
    return rows


if __name__ == "__main__":
    main()
