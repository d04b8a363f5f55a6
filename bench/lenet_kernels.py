"""Where a LeNet-5 training step spends its time: each layer alone, TensorFlow against PyTorch.

    python -m bench.lenet_kernels [--batch-size 128] [--repeats 300]

`lenet_training` compares whole training runs; this one times the kernels inside them, one layer
at a time at the training batch size: the forward pass, and the forward pass plus the gradients
that training needs (the kernel's always, the input's for every layer but the first). TensorFlow
runs the ops that the Keras layers call inside a `tf.function`, as `fit` does; PyTorch runs eager,
as its training loop does. Median milliseconds of `--repeats` calls after two warm-up calls; each
call sums its outputs to a scalar, so no large tensor is copied out.
C5 is timed both ways: as the 5x5 convolution of the paper and as the fully connected layer over
400 values that it is on a 5x5 map (`apps.digit_ocr` uses the latter).
"""

import argparse
import os
import statistics
import time

import numpy as np

from bench import save_results

BATCH_SIZE = 128
REPEATS = 300

C5_AS_CONVOLUTION = "C5 as conv 5x5, 16->120 maps, 5x5"  # timed for comparison, not in the app
# name: (input shape without the batch, kernel shape: [h, w, in, out] for a convolution, [in, out]
#        for a matmul, None for pooling; whether training needs the gradient of the input)
LAYERS = {
    "C1 conv 5x5, 1->6 maps, 32x32": ((32, 32, 1), (5, 5, 1, 6), False),
    "S2 average pool 2x2, 28x28x6": ((28, 28, 6), None, True),
    "C3 conv 5x5, 6->16 maps, 14x14": ((14, 14, 6), (5, 5, 6, 16), True),
    "S4 average pool 2x2, 10x10x16": ((10, 10, 16), None, True),
    C5_AS_CONVOLUTION: ((5, 5, 16), (5, 5, 16, 120), True),
    "C5 as dense 400->120": ((400,), (400, 120), True),
    "F6 dense 120->84": ((120,), (120, 84), True),
}


def median_ms(call, repeats: int) -> float:
    call()
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def tensorflow_times(batch_size: int, repeats: int) -> tuple[dict, float]:
    """({layer: (forward ms, forward+backward ms)}, the call overhead subtracted from each)."""
    import tensorflow as tf

    # Calling a tf.function from Python costs a fixed time that a training step pays once for
    # all its layers (and `steps_per_execution` once for many steps): measured and subtracted.
    scalar = tf.constant(1.0)
    overhead_call = tf.function(lambda x: x + 1.0)
    overhead = median_ms(lambda: overhead_call(scalar).numpy(), repeats)
    rng = np.random.default_rng(0)
    found = {}
    for name, (input_shape, kernel_shape, input_gradient) in LAYERS.items():
        x = tf.constant(rng.random((batch_size, *input_shape), dtype=np.float32))
        if kernel_shape is None:
            def layer(x):
                return tf.nn.avg_pool2d(x, 2, 2, "VALID")
            weights = []
        else:
            kernel = tf.Variable(rng.normal(0, 0.1, kernel_shape).astype(np.float32))
            weights = [kernel]

            def layer(x, kernel=kernel):
                if len(kernel.shape) == 2:
                    return tf.tanh(tf.matmul(x, kernel))
                return tf.tanh(tf.nn.conv2d(x, kernel, 1, "VALID"))

        @tf.function
        def forward(x, layer=layer):
            return tf.reduce_sum(layer(x))

        @tf.function
        def forward_backward(x, layer=layer, weights=weights, input_gradient=input_gradient):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(layer(x))
            gradients = tape.gradient(total, weights + ([x] if input_gradient else []))
            # The forward's result too: else the pools' gradients, which do not depend on x,
            # let TensorFlow prune the forward pass away.
            return total + tf.add_n([tf.reduce_sum(gradient) for gradient in gradients])

        found[name] = (
            median_ms(lambda f=forward, x=x: f(x).numpy(), repeats) - overhead,
            median_ms(lambda f=forward_backward, x=x: f(x).numpy(), repeats) - overhead,
        )
    return found, overhead


def pytorch_times(batch_size: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(0)
    found = {}
    for name, (input_shape, kernel_shape, input_gradient) in LAYERS.items():
        # PyTorch's layout: channels first, kernels [out, in, h, w], matmul weights [out, in].
        shape = input_shape if len(input_shape) == 1 else (input_shape[2], *input_shape[:2])
        x = torch.rand((batch_size, *shape), generator=generator, requires_grad=input_gradient)
        if kernel_shape is None:
            def layer(x):
                return torch.nn.functional.avg_pool2d(x, 2)
            weights = []
        else:
            torch_shape = (kernel_shape[::-1] if len(kernel_shape) == 2
                           else (kernel_shape[3], kernel_shape[2], *kernel_shape[:2]))
            kernel = torch.nn.Parameter(0.1 * torch.randn(torch_shape, generator=generator))
            weights = [kernel]

            def layer(x, kernel=kernel):
                if kernel.dim() == 2:
                    return torch.tanh(torch.nn.functional.linear(x, kernel))
                return torch.tanh(torch.nn.functional.conv2d(x, kernel))

        def forward(layer=layer, x=x):
            with torch.no_grad():
                return layer(x).sum().item()

        def forward_backward(layer=layer, weights=weights, x=x):
            for tensor in [*weights, x]:
                tensor.grad = None
            layer(x).sum().backward()

        found[name] = (median_ms(forward, repeats), median_ms(forward_backward, repeats))
    return found


def main(argv=None) -> dict:
    from apps import runner

    parser = argparse.ArgumentParser(prog="python -m bench.lenet_kernels",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)

    tensorflow, overhead = tensorflow_times(args.batch_size, args.repeats)
    measured = {"TensorFlow": tensorflow}
    try:
        measured["PyTorch"] = pytorch_times(args.batch_size, args.repeats)
    except ImportError:
        print("PyTorch is not installed (pip install torch==2.13.0): its columns are skipped")

    for times in measured.values():
        in_the_app = [times[name] for name in LAYERS if name != C5_AS_CONVOLUTION]
        times["the network as built (C5 as dense)"] = tuple(map(sum, zip(*in_the_app)))
    rows = []
    for name in measured["TensorFlow"]:
        tf_forward, tf_both = measured["TensorFlow"][name]
        row = {"layer": name, "TF forward ms": f"{tf_forward:.3f}",
               "TF fwd+bwd ms": f"{tf_both:.3f}"}
        if "PyTorch" in measured:
            torch_forward, torch_both = measured["PyTorch"][name]
            row.update({"PyTorch forward ms": f"{torch_forward:.3f}",
                        "PyTorch fwd+bwd ms": f"{torch_both:.3f}",
                        "TF / PyTorch (fwd+bwd)": f"{tf_both / torch_both:.2f}x"})
        rows.append(row)
    print(f"\nLeNet-5's layers at batch {args.batch_size}, median of {args.repeats} calls, "
          f"{os.cpu_count()} cores (lower is faster); TensorFlow's {overhead:.3f} ms a "
          "tf.function call subtracted")
    runner.print_table(rows)
    save_results("lenet_kernels", {"batch_size": args.batch_size, "repeats": args.repeats,
                                   "tensorflow_call_overhead_ms": overhead,
                                   "milliseconds_forward_and_forward_backward": measured})
    return measured


if __name__ == "__main__":
    main()
