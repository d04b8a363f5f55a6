"""GANs on real MNIST: the cGAN's label accuracy and both models' Frechet distance in LeNet-5's
feature space, against the real-vs-real floor, with epochs, wall and CPU time.

    python -m bench.gan [--models cgan dcgan] [--epochs 5] [--data ../shared/data/mnist]

`apps.gan`'s own training (default width, batch 64, Adam 2e-4 / 0.5) on MNIST's 55,000 training
digits; figures on the 10,000 test digits no model saw. The Frechet distance compares 5,000
generated images with one half of the test set; the floor is the other half against the same
half, the ceiling an untrained generator. Target: cGAN label accuracy >= 90% (LeNet-5 reads the
digit asked for). The judging LeNet-5 is `runs/bench/lenet5` when `python -m bench.mnist_lenet`
left one trained on the same data, else one trained into the first GAN's run directory.
"""

import argparse
import time
from pathlib import Path

from apps import gan, runner
from bench import SHARED_DATA, save_results
from models import dcgan

MNIST = SHARED_DATA / "mnist"
EPOCHS = {"cgan": 5, "dcgan": 5}  # about 2 CPU-minutes an epoch each (859 steps of 64)
LABEL_ACCURACY_TARGET = 0.90
RUNS = runner.RUNS_ROOT / "bench"


def shared_lenet(data: str) -> Path | None:
    """bench.mnist_lenet's classic LeNet-5 when it was trained on `data`."""
    candidate = RUNS / "lenet5"
    try:
        gan.check_evaluator(candidate, data)
    except runner.UsageError:
        return None
    return candidate


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.gan",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cgan", "dcgan"], choices=gan.MODELS)
    parser.add_argument("--epochs", type=int, help="default: per model, see EPOCHS")
    parser.add_argument("--batch-size", type=int, default=gan.BATCH_SIZE)
    parser.add_argument("--data", default=str(MNIST))
    args = parser.parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} is not here")
        return {}

    evaluator = shared_lenet(args.data)
    rows, results = [], {}
    for model_name in args.models:
        epochs = args.epochs or EPOCHS[model_name]
        run_dir = RUNS / f"gan_{model_name}"
        wall, cpu = time.perf_counter(), time.process_time()
        figures = gan.train(gan.TrainConfig(data=args.data, model=model_name, epochs=epochs,
                                            batch_size=args.batch_size, run_dir=run_dir,
                                            evaluator=evaluator, verbose=2))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        evaluator = evaluator or run_dir / "evaluator"  # the next model reuses this judge
        label_accuracy = figures.get("label_accuracy")
        met = None if label_accuracy is None else label_accuracy >= LABEL_ACCURACY_TARGET
        results[model_name] = {
            "epochs": epochs, "batch_size": args.batch_size, "filters": dcgan.FILTERS,
            "wall_seconds": wall, "cpu_seconds": cpu, "run_dir": str(run_dir),
            "label_accuracy_target": LABEL_ACCURACY_TARGET, "met": met,
            **{k: v for k, v in figures.items() if k != "label_accuracy_per_class"},
        }
        coverage = figures["mode_coverage"]
        rows.append({
            "model": model_name, "epochs": epochs,
            "FID-LeNet": f"{figures['frechet_lenet']:.2f}",
            "real vs real": f"{figures['frechet_floor_real_vs_real']:.2f}",
            "untrained": f"{figures['frechet_untrained_generator']:.1f}",
            "label accuracy": "-" if label_accuracy is None else
            f"{label_accuracy:.1%} ({'met' if met else 'NOT met'}: >= 90%)",
            "coverage": f"{coverage['covered']}/{coverage['classes']}",
            "wall": f"{wall / 60:.1f} min", "CPU": f"{cpu / 60:.1f} min",
        })
    judge = results[args.models[0]]
    print(f"\nGANs on MNIST (5,000 generated vs 5,000 test digits; judge: {judge['evaluator']},"
          f" {judge['evaluator_test_accuracy']:.2%} on the real test digits)")
    runner.print_table(rows)
    save_results("gan", {"data": args.data, "results": results})
    return results


if __name__ == "__main__":
    main()
