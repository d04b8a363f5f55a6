"""DSN recipes on MNIST, searched fast: a PyTorch replica of `layers.dsn` + `train_dsn`, for a GPU.

    python -m bench.dsn_recipes_torch [--data DIR] RECIPE:SEED [RECIPE:SEED ...]

`bench.mnist_layers` trains the DSN with this project's TensorFlow code in about 100 minutes on
2 CPU cores, so one configuration per session. The GPU machines lent to some sessions have
PyTorch but no TensorFlow (nothing can be installed there, and TensorFlow is larger than what
may be carried), so recipes were compared there with this replica, about 20 seconds each on an
H200: the same modules (sigmoid hidden units, W ~ N(0, 4 / sqrt(fan-in)), inputs = pixels plus
the outputs of the modules below), the same refinement (Adam with cosine decay, the gradient
through U solved per batch of 5,000 in float64), the same affine distortions (one resample per
image) and the same choice of U by validation (undistorted digits, or those plus two distorted
passes). Its figures only rank recipes; the project's figure is `bench.mnist_layers`'s.
It prints one JSON line per module (validation error of each U, test and training error)
and writes them all to bench/results/.
"""

import argparse
import gzip
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import SHARED_DATA, save_results

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
IMAGE_SIZE = 32  # MNIST's 28x28 padded to LeNet-5's input, as pipelines.images does
VALIDATION_DIGITS = 5000  # the last of the 60,000 training digits, as pipelines.images does
BATCH_SIZE = 5000  # examples per closed-form U in the refinement, and per H^T H product
LEARNING_RATE = 3e-3
RIDGE = 1.0
DISTORTED_PASSES = 2  # added to the undistorted digits for the "mixed" U
SHIFT, ROTATION, ZOOM = 2.5, 10.0, 0.08  # pixels, degrees, relative: pipelines.images' ranges

RECIPES = {  # refined modules, then one wide module whose W stays random (0 epochs)
    "5x3000": dict(units=[3000] * 5 + [12000], epochs=[15] * 5 + [0]),
    "5x3000-25epochs": dict(units=[3000] * 5 + [12000], epochs=[25] * 5 + [0]),
    "5x3000-lr1e-2": dict(units=[3000] * 5 + [12000], epochs=[15] * 5 + [0], learning_rate=1e-2),
    "8x2000": dict(units=[2000] * 8 + [12000], epochs=[15] * 8 + [0]),
    "6x2400": dict(units=[2400] * 6 + [12000], epochs=[15] * 6 + [0]),
    "8x2400": dict(units=[2400] * 8 + [12000], epochs=[15] * 8 + [0]),
    "8x2400-10epochs": dict(units=[2400] * 8 + [12000], epochs=[10] * 8 + [0]),
    "10x2000": dict(units=[2000] * 10 + [12000], epochs=[15] * 10 + [0]),
}


def read_idx(path: Path) -> np.ndarray:  # pipelines.images has one, but imports TensorFlow
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_mnist(folder: Path, prefix: str):
    images = torch.tensor(read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")) / 255.0
    labels = torch.tensor(read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    pad = (IMAGE_SIZE - 28) // 2
    return F.pad(images, (pad, pad, pad, pad)).to(DEVICE), labels.to(DEVICE)  # [n, 32, 32]


def distort(images, generator):
    """Shift, rotation and zoom drawn per image, composed into one affine map."""
    count, centre = len(images), (IMAGE_SIZE - 1) / 2

    def uniform():  # [count] in [-1, 1]
        return torch.rand(count, device=DEVICE, generator=generator) * 2 - 1

    angle, scale = uniform() * math.radians(ROTATION), 1 + uniform() * ZOOM
    shift_x, shift_y = uniform() * SHIFT / centre, uniform() * SHIFT / centre
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1),
                         torch.stack([sin, cos, shift_y], 1)], 1)  # [count, 2, 3]
    grid = F.affine_grid(theta, (count, 1, IMAGE_SIZE, IMAGE_SIZE), align_corners=True)
    return F.grid_sample(images[:, None], grid, align_corners=True)[:, 0]


def module_inputs(stack, images):
    """Pixels and the outputs of every module in `stack`, side by side."""
    features = [images.flatten(1)]
    for lower, bias, upper in stack:
        features.append(torch.sigmoid(torch.cat(features, 1) @ lower + bias) @ upper)
    return torch.cat(features, 1)


def in_batches(*tensors):
    return zip(*(tensor.split(BATCH_SIZE) for tensor in tensors))


def ridge_solve(gram, cross):
    """U = (H^T H + lambda I)^-1 H^T T, from H^T H and H^T T, in float64."""
    gram = gram + RIDGE * torch.eye(len(gram), dtype=torch.float64, device=DEVICE)
    return torch.cholesky_solve(cross, torch.linalg.cholesky(gram)).float()


@torch.no_grad()
def upper_statistics(stack, lower, bias, images, labels):
    """H^T H and H^T T over one pass of the digits, in float64."""
    units = lower.shape[1]
    gram = torch.zeros(units, units, dtype=torch.float64, device=DEVICE)
    cross = torch.zeros(units, 10, dtype=torch.float64, device=DEVICE)
    for image_batch, label_batch in in_batches(images, labels):
        hidden = torch.sigmoid(module_inputs(stack, image_batch) @ lower + bias).double()
        gram += hidden.T @ hidden
        cross += hidden.T @ F.one_hot(label_batch, 10).double()
    return gram, cross


@torch.no_grad()
def error_rate(stack, images, labels):
    # the top module's outputs are the last 10 columns of what a module above it would read
    wrong = sum(int((torch.argmax(module_inputs(stack, x)[:, -10:], 1) != y).sum())
                for x, y in in_batches(images, labels))
    return wrong / len(labels)


def refine(stack, lower, bias, images, labels, epochs, learning_rate, generator):
    """Adam on W and a, differentiating through U solved from each batch of 5,000."""
    optimizer = torch.optim.Adam([lower, bias], lr=learning_rate, eps=1e-7)  # Keras' epsilon
    total_steps, step = epochs * math.ceil(len(labels) / BATCH_SIZE), 0
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=DEVICE, generator=generator)
        for image_batch, label_batch in in_batches(distort(images[order], generator),
                                                   labels[order]):
            for group in optimizer.param_groups:  # Keras' CosineDecay, to zero
                group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            with torch.no_grad():
                inputs = module_inputs(stack, image_batch)
            targets = F.one_hot(label_batch, 10).float()
            hidden = torch.sigmoid(inputs @ lower + bias)
            upper = ridge_solve((hidden.T @ hidden).double(), (hidden.T @ targets).double())
            loss = ((hidden @ upper - targets) ** 2).sum() / len(targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1


def train(recipe: str, seed: int, mnist, *, units, epochs, learning_rate: float = LEARNING_RATE):
    """One recipe: `units` and `epochs` per module (0 epochs: W stays random)."""
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    torch.manual_seed(seed)
    (images, labels), (test_images, test_labels) = mnist
    train_images, train_labels = images[:-VALIDATION_DIGITS], labels[:-VALIDATION_DIGITS]
    valid_images, valid_labels = images[-VALIDATION_DIGITS:], labels[-VALIDATION_DIGITS:]
    stack, rows = [], []
    for k, (width, module_epochs) in enumerate(zip(units, epochs)):
        fan_in = IMAGE_SIZE * IMAGE_SIZE + 10 * k
        lower = (torch.randn(fan_in, width, device=DEVICE) * 4 / math.sqrt(fan_in))
        lower.requires_grad_()
        bias = torch.zeros(width, device=DEVICE, requires_grad=True)
        refine(stack, lower, bias, train_images, train_labels, module_epochs, learning_rate,
               generator)
        lower, bias = lower.detach(), bias.detach()
        # the mixed U's sums start from the clean U's: the undistorted pass is made once
        gram, cross = upper_statistics(stack, lower, bias, train_images, train_labels)
        uppers = {"clean": ridge_solve(gram, cross)}
        for _ in range(DISTORTED_PASSES):
            distorted_gram, distorted_cross = upper_statistics(
                stack, lower, bias, distort(train_images, generator), train_labels)
            gram, cross = gram + distorted_gram, cross + distorted_cross
        uppers["mixed"] = ridge_solve(gram, cross)
        errors = {name: error_rate(stack + [(lower, bias, upper)], valid_images, valid_labels)
                  for name, upper in uppers.items()}
        kept = "mixed" if errors["mixed"] <= errors["clean"] else "clean"
        stack.append((lower, bias, uppers[kept]))
        rows.append({
            "recipe": recipe, "seed": seed, "module": k + 1, "units": width,
            "epochs": module_epochs, "validation_clean": errors["clean"],
            "validation_mixed": errors["mixed"], "kept": kept,
            "test": error_rate(stack, test_images, test_labels),
            "training": error_rate(stack, train_images[:10000], train_labels[:10000]),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.dsn_recipes_torch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RECIPE:SEED",
                        help=f"recipes: {', '.join(RECIPES)}")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "mnist")
    args = parser.parse_args(argv)
    runs = [run.partition(":")[::2] for run in args.runs]  # all checked before any training
    for recipe, seed in runs:
        if recipe not in RECIPES or not seed.isdigit():
            parser.error(f"{recipe}:{seed}: give RECIPE:SEED, recipes {', '.join(RECIPES)}")
    mnist = load_mnist(args.data, "train"), load_mnist(args.data, "t10k")
    rows = []
    for recipe, seed in runs:
        rows += train(recipe, int(seed), mnist, **RECIPES[recipe])
    save_results("dsn_recipes_torch", {"device": DEVICE, "modules": rows})


if __name__ == "__main__":
    main()
