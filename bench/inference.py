"""LeNet-5 inference: latency at batch 1 and throughput at batch 256, every way a user may run it,
beside the floor that the model's FLOP count and this CPU's measured matmul rate allow.

    python -m bench.inference [--repeats 200]

Paths: Keras `model(x)` (eager), `model.predict(x)`, the reloaded SavedModel's signature, LiteRT
float32 and int8 (XNNPACK, 1 and 2 threads; quantisation of inputs included, as an app does it)
and PyTorch eager when installed. Each figure is the median over `--repeats` timed calls after a
warm-up. The floor is FLOPs / (float32 matmul FLOP/s of numpy on this machine): how fast the
arithmetic alone could go; the "x floor" column says how many times slower each path is.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import save_results, short_lenet_export

BIG_BATCH = 256
GOAL = 20.0  # LiteRT int8 at batch 1 against Keras model(x)


def lenet5_flops() -> int:
    """Floating-point operations of one classic LeNet-5 forward pass (a multiply-add is two).

    Counted as the frameworks compute it: C3 dense over all 6 input maps (the connection table
    zeroes weights, it does not skip them); pooling and activations included.
    """
    conv = lambda out_hw, out_c, k, in_c: 2 * out_hw**2 * out_c * k * k * in_c  # noqa: E731
    dense = lambda n_in, n_out: 2 * n_in * n_out  # noqa: E731
    multiply_adds = (conv(28, 6, 5, 1) + conv(10, 16, 5, 6) + conv(1, 120, 5, 16)
                     + dense(120, 84) + dense(84, 10))
    pooling = 14 * 14 * 6 * 4 + 5 * 5 * 16 * 4
    activations = 28 * 28 * 6 + 10 * 10 * 16 + 120 + 84 + 10
    return multiply_adds + pooling + activations


def matmul_flops_per_second(size: int = 1024, repeats: int = 20) -> float:
    """This CPU's float32 matmul rate through numpy's BLAS (all cores), best of `repeats`."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    b = np.random.default_rng(1).random((size, size), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def median_seconds(function, repeats: int) -> float:
    for _ in range(max(5, repeats // 10)):
        function()  # warm-up: tracing, allocation, caches
    return statistics.median(_timed(function) for _ in range(repeats))


def paths(version_dir: Path, model_path: Path, small: np.ndarray, big: np.ndarray) -> dict:
    """name -> (call at batch 1, call at batch 256)."""
    import keras
    import tensorflow as tf

    from serving.litert import LiteRTModel

    model = keras.saving.load_model(model_path)
    signature = tf.saved_model.load(str(version_dir)).signatures["predict_pixels"]
    small_tensor, big_tensor = tf.constant(small), tf.constant(big)
    found = {
        "Keras model(x)": (lambda: model(small, training=False).numpy(),
                           lambda: model(big, training=False).numpy()),
        "Keras model.predict": (lambda: model.predict(small, verbose=0),
                                lambda: model.predict(big, batch_size=BIG_BATCH, verbose=0)),
        "SavedModel signature": (lambda: signature(pixels=small_tensor)["probabilities"].numpy(),
                                 lambda: signature(pixels=big_tensor)["probabilities"].numpy()),
    }
    extra = version_dir / "assets.extra"
    for variant in ("float32", "int8"):
        for threads in (1, 2):
            # One runner per batch size: switching shapes would reallocate at every call.
            one = LiteRTModel(extra / f"digit_ocr_{variant}.tflite", threads).signature()
            many = LiteRTModel(extra / f"digit_ocr_{variant}.tflite", threads).signature()
            found[f"LiteRT {variant}, {threads} thread{'s' if threads > 1 else ''}"] = (
                lambda one=one: one(pixels=small), lambda many=many: many(pixels=big))
    try:
        import torch

        from bench.torch_lenet import LeNet5

        torch.set_num_threads(os.cpu_count() or 1)
        network = LeNet5().eval()
        small_torch = torch.from_numpy(small.transpose(0, 3, 1, 2).copy())
        big_torch = torch.from_numpy(big.transpose(0, 3, 1, 2).copy())

        def torch_call(x):
            with torch.inference_mode():
                return network(x).softmax(1).numpy()

        found["PyTorch eager"] = (lambda: torch_call(small_torch), lambda: torch_call(big_torch))
    except ImportError:
        print("PyTorch is not installed (pip install torch==2.13.0): its row is skipped")
    return found


def main(argv=None) -> dict:
    from apps import runner
    from pipelines import images

    parser = argparse.ArgumentParser(prog="python -m bench.inference",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)

    flops = lenet5_flops()
    rate = matmul_flops_per_second()
    floor_one, floor_big = flops / rate, BIG_BATCH * flops / rate
    with tempfile.TemporaryDirectory() as workdir:
        version_dir, _, _ = short_lenet_export(Path(workdir))
        test_pixels, _ = images.labelled_arrays(images.load_digits().test)
        big = np.resize(test_pixels, (BIG_BATCH, *test_pixels.shape[1:]))
        results = {}
        for name, (call_one, call_big) in paths(
            version_dir, Path(workdir) / "run" / "best.keras", test_pixels[:1], big
        ).items():
            one = median_seconds(call_one, args.repeats)
            many = median_seconds(call_big, max(20, args.repeats // 10))
            results[name] = {
                "batch1_ms": one * 1000, "batch256_images_per_second": BIG_BATCH / many,
                "batch1_x_floor": one / floor_one, "batch256_x_floor": many / floor_big,
            }
            print(f"{name}: {one * 1e3:.3f} ms at batch 1, {BIG_BATCH / many:,.0f} images/s",
                  flush=True)

    keras_one = results["Keras model(x)"]["batch1_ms"]
    rows = [{"path": name, "batch 1 (ms)": f"{r['batch1_ms']:.3f}",
             "speed-up vs model(x)": f"{keras_one / r['batch1_ms']:.1f}x",
             "x floor (b1)": f"{r['batch1_x_floor']:,.0f}",
             f"batch {BIG_BATCH} (images/s)": f"{r['batch256_images_per_second']:,.0f}",
             f"x floor (b{BIG_BATCH})": f"{r['batch256_x_floor']:.1f}"}
            for name, r in results.items()]
    ratio = keras_one / results["LiteRT int8, 1 thread"]["batch1_ms"]
    print(f"\nLeNet-5 inference, {os.cpu_count()} cores. {flops / 1e6:.2f} MFLOP per image; "
          f"numpy float32 matmul {rate / 1e9:.1f} GFLOP/s, so the floor is "
          f"{floor_one * 1e6:.1f} us per image")
    runner.print_table(rows)
    print(f"LiteRT int8 (1 thread) at batch 1: {ratio:.0f}x faster than Keras model(x) "
          f"(goal >= {GOAL:.0f}x)")
    save_results("inference", {"flops_per_image": flops, "matmul_flops_per_second": rate,
                               "results": results, "int8_vs_keras_batch1": ratio,
                               "goal": GOAL, "met": ratio >= GOAL})
    return results


if __name__ == "__main__":
    main()
