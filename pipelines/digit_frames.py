"""Pictures of handwritten digits to MNIST frames with numpy, scipy and PIL only, no TensorFlow.

This is what runs before the model where TensorFlow is absent (`serving.litert`, a phone app):
a picture of digits written in a row is segmented into one crop per digit, and each crop is
framed the way MNIST was made. `pipelines.images.mnist_normalize` does the same framing with
TensorFlow ops, inside the SavedModel graph; a test keeps the two in agreement.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pipelines import DataError

FRAME_SIZE = 28  # MNIST's frame ...
DIGIT_BOX = 20  # ... with the digit fitted into a 20x20 box inside it
MODEL_SIZE = 32  # LeNet-5's input: the frame with a 2-pixel border
INK_LEVEL = 0.25  # share of the brightest ink above which a pixel counts for the bounding box
# Where MNIST puts a digit's centre of mass: pixel (14, 14) of the 28x28 frame (its test digits
# average 13.99, 14.01), half a pixel off the frame's geometric middle.
FRAME_CENTRE = FRAME_SIZE / 2
# A 28x28 picture whose ink (above INK_LEVEL) has a longer side of min_box..DIGIT_BOX pixels and
# whose centre of mass is within centre_tolerance of FRAME_CENTRE is an MNIST frame already, and is
# not refitted: framing it again would move its pixels (bench/README.md, "Serving skew").
ALREADY_FRAMED = {"min_box": 14, "centre_tolerance": 1.0}


def check_image_file(path: Path) -> None:
    """Raises DataError naming `path` unless it is a readable image."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for corrupt files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from None


def read_grayscale(path: Path) -> np.ndarray:
    """An image file as uint8 [H, W] grey levels; DataError naming the file if it is not one."""
    check_image_file(path)
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def centre_of_mass(frame: np.ndarray) -> tuple[float, float]:
    mass = frame.sum() + 1e-6
    return ((frame.sum(axis=1) * np.arange(frame.shape[0])).sum() / mass,
            (frame.sum(axis=0) * np.arange(frame.shape[1])).sum() / mass)


def mnist_frame(gray: np.ndarray) -> np.ndarray:
    """Any grey-level digit picture [H, W] -> uint8 [28, 28], light ink on black, MNIST-framed.

    Inverts dark-on-light pictures, removes the paper's level, stretches the contrast. A
    picture that is an MNIST frame already (ALREADY_FRAMED) is kept as it is; any other has the
    ink's bounding box fitted into 20x20 (aspect kept) in the middle of 28x28, then the frame
    shifted so that the ink's centre of mass is where MNIST puts it.
    """
    image = gray.astype(np.float32)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if border.mean() > image.mean():  # paper is brighter than ink
        image, border = 255.0 - image, 255.0 - border
    # The paper's level: the border's median, which ink touching the edge does not move.
    image = np.maximum(image - np.sort(border)[border.size // 2], 0.0)
    image *= 255.0 / max(float(image.max()), 1e-3)

    rows = np.flatnonzero((image > INK_LEVEL * 255.0).any(axis=1))
    cols = np.flatnonzero((image > INK_LEVEL * 255.0).any(axis=0))
    if rows.size and image.shape == (FRAME_SIZE, FRAME_SIZE):
        longer_side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        centre = centre_of_mass(image)
        if (ALREADY_FRAMED["min_box"] <= longer_side <= DIGIT_BOX
                and max(abs(c - FRAME_CENTRE) for c in centre)
                <= ALREADY_FRAMED["centre_tolerance"]):
            return np.clip(np.round(image), 0, 255).astype(np.uint8)
    if rows.size:
        image = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = image.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    digit = digit * (255.0 / max(float(digit.max()), 1e-3))  # as resampled ink is softer
    frame = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    top, left = (FRAME_SIZE - size[1]) // 2, (FRAME_SIZE - size[0]) // 2
    frame[top : top + size[1], left : left + size[0]] = digit

    margin = (FRAME_SIZE - DIGIT_BOX) // 2
    centre = centre_of_mass(frame)
    shift = np.clip(np.round([FRAME_CENTRE - centre[0], FRAME_CENTRE - centre[1]]),
                    -margin, margin)
    frame = np.roll(frame, shift.astype(int), axis=(0, 1))
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def model_input(frames: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 32, 32, 1] in [0, 1]: LeNet-5's input."""
    pad = (MODEL_SIZE - FRAME_SIZE) // 2
    padded = np.pad(frames.astype(np.float32) / 255.0, [(0, 0), (pad, pad), (pad, pad)])
    return padded[..., None]


SPECK_SHARE = 0.05  # components under 5% of the largest one's area are dust, not digits
SAME_DIGIT_OVERLAP = 0.5  # column spans overlapping this much of the narrower are one digit


def segment_digits(gray: np.ndarray) -> list[np.ndarray]:
    """Splits a grey-level image of digits written in a row into one crop per digit, left to right.

    Ink is separated from paper by a threshold between the background level (the median of the
    border) and the brightest ink; connected components are the digit candidates. Specks are
    dropped, and components whose column spans mostly overlap (a broken stroke, the two parts of
    a 5 written in two movements) are merged. Each crop is light ink on black, other digits
    masked out.
    """
    gray = gray.astype(np.float32)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > gray.mean():  # dark ink on light paper
        gray, border = 255.0 - gray, 255.0 - border
    background = float(np.median(border))
    ink = np.clip(gray - background, 0, None)
    if ink.max() <= 0:
        return []
    mask = ink > 0.35 * ink.max()
    labels, found = ndimage.label(mask, structure=np.ones((3, 3)))
    if not found:
        return []
    areas = ndimage.sum(mask, labels, index=np.arange(1, found + 1))
    boxes = ndimage.find_objects(labels)
    components = [
        (boxes[i][1].start, boxes[i][1].stop, [i + 1])
        for i in range(found)
        if areas[i] >= SPECK_SHARE * areas.max()
    ]
    components.sort()
    digits = []  # [left, right, component ids]
    for left, right, ids in components:
        if digits:
            previous = digits[-1]
            overlap = min(right, previous[1]) - max(left, previous[0])
            narrower = min(right - left, previous[1] - previous[0])
            if overlap >= SAME_DIGIT_OVERLAP * narrower:
                digits[-1] = [min(left, previous[0]), max(right, previous[1]), previous[2] + ids]
                continue
        digits.append([left, right, ids])

    crops = []
    for _, _, ids in digits:
        # Grow the mask by two pixels so the anti-aliased rim of each stroke is kept.
        region = ndimage.binary_dilation(np.isin(labels, ids), iterations=2)
        rows, cols = np.nonzero(region)
        crop = np.where(region, ink, 0.0)[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        crops.append(np.pad(crop, 4)[..., None])  # a dark margin: MNIST framing reads the border
    return crops


def digit_pictures(gray: np.ndarray) -> list[np.ndarray]:
    """What to frame and read in a picture [H, W]: the whole picture [H, W, 1] when it holds one
    digit, as the SavedModel's `serving_default` reads every picture, else one crop per digit,
    left to right (`segment_digits`); [] when there is no ink. A picture of MNIST's 28x28 is one
    digit: cutting it would read a digit written in two strokes as two."""
    crops = segment_digits(gray)
    whole = crops and (len(crops) == 1 or gray.shape == (FRAME_SIZE, FRAME_SIZE))
    return [gray.astype(np.float32)[..., None]] if whole else crops
