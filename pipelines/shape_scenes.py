"""The captioner's embedded default: generated scenes of coloured shapes with compositional
captions, several true phrasings per scene, and held-out combinations.

A scene is a light 48x48 canvas with 1 to 3 objects, each in its own third of the width (so "to
the left of" is never ambiguous) at a random height. An object is a size (small, big), a colour
(red, green, blue, yellow) and a shape (circle, square, triangle): 24 kinds of object. Captions
name the objects from left to right in several equally true phrasings, all kept as references:

    "a small red circle to the left of a big blue square"
    "a big blue square to the right of a small red circle"
    "a small red circle and a big blue square"

Memorising fails by construction: a scene's *combination* is the set of (colour, shape) of its
objects, and each combination of two or three objects belongs to exactly one split (by a fixed
hash), so every held-out scene with 2-3 objects shows a combination the model never saw in
training, even though it has seen every single object. One-object scenes go to training only.
"""

import zlib
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 48
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220),
           "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5, "big": 8}  # half-widths in pixels
MAX_OBJECTS = 3
BACKGROUND = 235
NOISE = 6  # pixel noise, so the CNN cannot key on exact values
DEFAULT_SIZE = 6000
SEED = 7
# A combination's split by crc32 % 10: 0 test, 1 validation, the rest training.
TEST_BUCKETS, VALIDATION_BUCKETS = (0,), (1,)


@dataclass(frozen=True)
class Thing:
    size: str
    colour: str
    shape: str

    @property
    def words(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


def captions(things: list[Thing]) -> list[str]:
    """All phrasings of a scene whose objects are listed left to right; the first is canonical."""
    d = [f"a {t.words}" for t in things]
    if len(d) == 1:
        return [d[0], f"one {things[0].words}", f"a single {things[0].words}"]
    if len(d) == 2:
        return [f"{d[0]} to the left of {d[1]}", f"{d[1]} to the right of {d[0]}",
                f"{d[0]} and {d[1]}"]
    return [f"{d[0]} to the left of {d[1]} and {d[2]}", f"{d[0]} , {d[1]} and {d[2]}",
            f"{d[2]} to the right of {d[1]} and {d[0]}"]


def combination(things: list[Thing]) -> str:
    return "+".join(sorted(f"{t.colour} {t.shape}" for t in things))


def split_of(things: list[Thing]) -> str:
    if len(things) == 1:
        return "train"
    bucket = zlib.crc32(combination(things).encode()) % 10
    if bucket in TEST_BUCKETS:
        return "test"
    return "validation" if bucket in VALIDATION_BUCKETS else "train"


def draw(things: list[Thing], columns: list[int], rng: np.random.Generator) -> np.ndarray:
    """uint8 [IMAGE_SIZE, IMAGE_SIZE, 3]; object i is centred in third `columns[i]`."""
    image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), BACKGROUND, np.float32)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    third = IMAGE_SIZE / 3
    for thing, column in zip(things, columns):
        r = SIZES[thing.size]
        cx = third * column + third / 2 + rng.uniform(-2, 2)
        cy = rng.uniform(r + 1, IMAGE_SIZE - r - 1)
        if thing.shape == "circle":
            inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        elif thing.shape == "square":
            inside = (abs(x - cx) <= r * 0.85) & (abs(y - cy) <= r * 0.85)
        else:  # apex up: rows widen linearly from the top to the base
            top, bottom = cy - r, cy + r
            half_width = (y - top) / (2 * r) * r
            inside = (y >= top) & (y <= bottom) & (abs(x - cx) <= half_width)
        image[inside] = COLOURS[thing.colour]
    image += rng.normal(0, NOISE, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def random_scene(rng: np.random.Generator, objects: int | None = None):
    n = objects or int(rng.integers(1, MAX_OBJECTS + 1))
    columns = sorted(rng.choice(3, size=n, replace=False).tolist())
    things = [Thing(str(rng.choice(list(SIZES))), str(rng.choice(list(COLOURS))),
                    str(rng.choice(SHAPES))) for _ in range(n)]
    return things, columns


def generate(size: int = DEFAULT_SIZE, seed: int = SEED, objects: int | None = None) -> dict:
    """`size` scenes split by combination -> {split: (images uint8 [n, 48, 48, 3],
    references list of lists of str)}. `objects` fixes the object count (default 1-3)."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "validation", "test")}
    for _ in range(size):
        things, columns = random_scene(rng, objects)
        images, references = out[split_of(things)]
        images.append(draw(things, columns, rng))
        references.append(captions(things))
    return {split: (np.stack(images) if images else
                    np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), references)
            for split, (images, references) in out.items()}
