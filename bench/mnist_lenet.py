"""LeNet-5 on real MNIST: test error, epochs and wall time of `apps.digit_ocr`'s own training.

    python -m bench.mnist_lenet [--models lenet5 lenet5-modern] [--epochs 20]

Targets (LeCun et al. 1998 report 0.95% for LeNet-5 without distortions, 0.8% with):
classic `lenet5` <= 0.9% test error, `lenet5-modern` <= 0.6%, on the 10,000 MNIST test digits
that no model saw (the last 5,000 training digits select the best epoch).
"""

import argparse
import time
from pathlib import Path

from apps import digit_ocr, runner
from bench import SHARED_DATA, save_results

MNIST = SHARED_DATA / "mnist"
TARGETS = {"lenet5": 0.009, "lenet5-modern": 0.006}
# (epochs, batch size) per model: the batch-normalised net keeps improving for longer.
SCHEDULES = {"lenet5": (20, 128), "lenet5-modern": (40, 128)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.mnist_lenet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--epochs", type=int, help="default: per model, see SCHEDULES")
    parser.add_argument("--batch-size", type=int, help="default: per model, see SCHEDULES")
    parser.add_argument("--seed", type=int, default=digit_ocr.SEED,
                        help="initial weights, shuffling and distortions (default: %(default)s)")
    parser.add_argument("--data", default=str(MNIST))
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="train without distortions (LeCun et al. report 0.95%% then)")
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} is not here")
        return {}

    rows, results = [], {}
    for model_name in args.models:
        epochs = args.epochs or SCHEDULES[model_name][0]
        batch_size = args.batch_size or SCHEDULES[model_name][1]
        started, cpu_started = time.perf_counter(), time.process_time()
        run_dir = runner.RUNS_ROOT / "bench" / model_name
        metrics = digit_ocr.train(digit_ocr.TrainConfig(
            data=args.data, model=model_name, epochs=epochs,
            batch_size=batch_size, run_dir=run_dir,
            augment=args.augment, seed=args.seed, verbose=2,
        ))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        error = 1.0 - metrics["test_accuracy"]
        validation_error = 1.0 - max(runner.read_history(run_dir)["val_accuracy"])
        results[model_name] = {"test_error": error, "validation_error": validation_error,
                               "epochs": epochs,
                               "batch_size": batch_size, "augment": args.augment,
                               "seed": args.seed, "wall_seconds": seconds,
                               "cpu_seconds": cpu_seconds,
                               "target": TARGETS[model_name], "met": error <= TARGETS[model_name]}
        rows.append({"model": model_name, "epochs": epochs, "batch": batch_size,
                     "validation error": f"{validation_error:.2%}",
                     "test error": f"{error:.2%}", "target": f"<= {TARGETS[model_name]:.1%}",
                     "met": "yes" if error <= TARGETS[model_name] else "NO",
                     "wall time": f"{seconds / 60:.1f} min",
                     "CPU time": f"{cpu_seconds / 60:.1f} min"})
    print("\nLeNet-5 on MNIST (10,000 test digits)")
    runner.print_table(rows)
    save_results("mnist_lenet", {"results": results})
    return results


if __name__ == "__main__":
    main()
