"""Caption data: the generated shape scenes (compositional captions, held-out combinations) and
the Flickr8k / COCO loaders on small fixtures built here with the real file layouts; the LiteRT
runner reads image files into the pixels the SavedModel's graph gives their bytes (the scenes,
and Flickr8k's photos when ../shared/data holds them)."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines import DataError, shape_scenes
from pipelines import captions as caption_data
from serving import litert_captioning

FLICKR8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k"

pytestmark = pytest.mark.fast  # the edit-test tier: make test-fast


@pytest.fixture(scope="module")
def scenes():
    return shape_scenes.generate(1500, seed=3)


def test_scene_splits_never_share_a_combination_of_objects(scenes):
    # Each scene's combination, read back from its canonical caption.
    train = {shape_scenes.combination(objects_of(r[0])) for r in scenes["train"][1]}
    test = {shape_scenes.combination(objects_of(r[0])) for r in scenes["test"][1]}
    validation = {shape_scenes.combination(objects_of(r[0])) for r in scenes["validation"][1]}
    assert len(test) >= 25 and len(validation) >= 25
    assert not train & test and not train & validation and not test & validation
    # Every single object of a test scene is seen in training (1-object scenes go to training).
    seen = {f"{t.colour} {t.shape}" for r in scenes["train"][1] for t in objects_of(r[0])}
    assert {f"{t.colour} {t.shape}" for r in scenes["test"][1] for t in objects_of(r[0])} <= seen
    assert all(len(objects_of(r[0])) >= 2 for r in scenes["test"][1])


def objects_of(caption: str) -> list:
    words = caption.replace(" ,", "").split()
    return [shape_scenes.Thing(words[i + 1], words[i + 2], words[i + 3])
            for i, w in enumerate(words) if w == "a" and i + 3 < len(words)
            and words[i + 3] in shape_scenes.SHAPES]


def test_captions_describe_the_picture_left_to_right():
    rng = np.random.default_rng(0)
    things = [shape_scenes.Thing("big", "red", "circle"), shape_scenes.Thing("small", "blue",
                                                                            "square")]
    image = shape_scenes.draw(things, [0, 2], rng).astype(int)
    red = (image[..., 0] > 180) & (image[..., 1] < 90) & (image[..., 2] < 90)
    blue = (image[..., 2] > 180) & (image[..., 0] < 100)
    assert np.nonzero(red)[1].mean() < 16 < 32 < np.nonzero(blue)[1].mean()
    assert red.sum() > blue.sum()  # big against small
    refs = shape_scenes.captions(things)
    assert refs[0] == "a big red circle to the left of a small blue square"
    assert "a small blue square to the right of a big red circle" in refs
    assert len(set(refs)) == 3


def test_scenes_are_reproducible_and_images_uint8(scenes):
    again = shape_scenes.generate(1500, seed=3)
    np.testing.assert_array_equal(again["test"][0], scenes["test"][0])
    images = scenes["train"][0]
    assert images.dtype == np.uint8 and images.shape[1:] == (48, 48, 3)
    assert len(scenes["train"][0]) == len(scenes["train"][1])


def write_image(path, colour=(200, 30, 30), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def flickr(tmp_path):
    """Flickr8k's layout: token file, Flicker8k_Dataset/ (the archive's spelling), split files."""
    names = [f"{1000 + i}_abc.jpg" for i in range(10)]
    lines = []
    for i, name in enumerate(names):
        write_image(tmp_path / "Flicker8k_Dataset" / name, colour=(20 * i, 50, 100))
        lines += [f"{name}#{k}\tA dog number {i} runs , version {k} ." for k in range(5)]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:6]) + "\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("\n".join(names[6:8]) + "\n")
    (tmp_path / "Flickr_8k.testImages.txt").write_text("\n".join(names[8:]) + "\n")
    return tmp_path, names


def test_flickr8k_loader_reads_the_real_layout_and_split_files(flickr):
    folder, names = flickr
    data = caption_data.load(str(folder))
    assert (len(data.train), len(data.validation), len(data.test)) == (6, 2, 2)
    assert data.test.images[0].endswith(f"Flicker8k_Dataset/{names[8]}")
    assert data.test.references[0][0] == "A dog number 8 runs , version 0 ."
    assert len(data.test.references[0]) == 5
    images = caption_data.image_array(data.test.images, 24)
    assert images.shape == (2, 24, 24, 3) and images.dtype == np.uint8
    assert abs(int(images[0, 5, 5, 0]) - 160) <= 1  # decoded and resized in tf.data
    # The token file alone also works (fixed-seed split by image).
    for split in ("train", "dev", "test"):
        (folder / f"Flickr_8k.{split}Images.txt").unlink()
    data = caption_data.load(str(folder / "Flickr8k.token.txt"))
    assert len(data.train) + len(data.validation) + len(data.test) == 10
    assert not set(data.train.images) & set(data.test.images)


def test_flickr8k_missing_image_is_named(flickr):
    folder, names = flickr
    (folder / "Flicker8k_Dataset" / names[4]).unlink()
    with pytest.raises(DataError, match=f"1 of 10 images are missing.*{names[4]}"):
        caption_data.load(str(folder))


def test_flickr8k_unreadable_image_is_named(flickr):
    folder, names = flickr
    (folder / "Flicker8k_Dataset" / names[2]).write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=f"{names[2]}: unreadable image"):
        caption_data.load(str(folder))


def test_flickr8k_bad_token_line_is_named(flickr):
    folder, _ = flickr
    (folder / "Flickr8k.token.txt").write_text("just a caption without an image\n")
    with pytest.raises(DataError, match=r"Flickr8k.token.txt:1: expected"):
        caption_data.load(str(folder))


def test_coco_captions_json(tmp_path):
    images, annotations = [], []
    for i in range(12):
        write_image(tmp_path / "val2017" / f"{i:012d}.jpg")
        images.append({"id": i, "file_name": f"{i:012d}.jpg"})
        annotations += [{"image_id": i, "id": 10 * i + k, "caption": f"A cat {i} sits {k}."}
                        for k in range(3)]
    path = tmp_path / "annotations" / "captions_val2017.json"
    path.parent.mkdir()
    (tmp_path / "annotations" / "val2017").symlink_to(tmp_path / "val2017")
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    data = caption_data.load(str(path))
    assert len(data.train) + len(data.validation) + len(data.test) == 12
    assert all(len(r) == 3 for r in data.train.references)
    annotations.append({"image_id": 99, "caption": "orphan"})
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    with pytest.raises(DataError, match="image id 99"):
        caption_data.load(str(path))
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a COCO captions JSON"):
        caption_data.load(str(path))


def test_neither_layout_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="neither a Flickr8k folder"):
        caption_data.load(str(tmp_path / "nothing.txt"))
    with pytest.raises(DataError, match="no Flickr8k.token.txt"):
        caption_data.load(str(tmp_path))


def graph_pixels(path: Path, size: int) -> np.ndarray:
    """What the SavedModel, `caption` and `evaluate` make of an image file."""
    return caption_data.decode_image(tf.constant(path.read_bytes()), size).numpy()


def test_litert_runner_reads_the_scenes_as_the_graph_does(scenes, tmp_path):
    """The held-out scenes as PNG files (as `served_figures` sends them), at the model's size and
    resized (shrunk and enlarged), in the colour modes a user's file may have."""
    paths = []
    for i, image in enumerate(scenes["test"][0][:40]):
        mode = ("RGB", "RGBA", "L", "P", "I;16")[i % 5]
        picture = Image.fromarray(image)
        picture = picture.convert("L").convert(mode) if mode == "I;16" else picture.convert(mode)
        paths.append(tmp_path / f"{i:02d}_{mode.replace(';', '')}.png")
        picture.save(paths[-1])
    for size in (shape_scenes.IMAGE_SIZE, 40, 64, 17):
        for path in paths:
            np.testing.assert_array_equal(litert_captioning.read_image(path, size),
                                          graph_pixels(path, size), err_msg=f"{path} at {size}")
    # A scene at the model's size is read as it is, on both sides.
    np.testing.assert_array_equal(litert_captioning.read_image(paths[0], 48), scenes["test"][0][0])
    # The in-memory resize of `image_array` (a non-default --image-size) rounds as decode_image.
    np.testing.assert_array_equal(caption_data.image_array(scenes["test"][0][:40:5], 40),
                                  [graph_pixels(path, 40) for path in paths[::5]])  # the RGB ones


def test_litert_runner_reads_flickr8k_photos_as_the_graph_does():
    """Real JPEG photos (Flickr8k's test list): Pillow's decode and numpy's resize against
    TensorFlow's, pixel for pixel, at the model's size and at another."""
    listed = FLICKR8K / "Flickr_8k.testImages.txt"
    if not listed.is_file():
        pytest.skip(f"{FLICKR8K} is not here")
    names = listed.read_text().split()[:60]
    for name in names:
        path = FLICKR8K / "Flicker8k_Dataset" / name
        for size in (shape_scenes.IMAGE_SIZE, 96):
            np.testing.assert_array_equal(litert_captioning.read_image(path, size),
                                          graph_pixels(path, size), err_msg=f"{name} at {size}")


# ---------------------------------------------------------------------------------------------
# The photo captioner's captions and cached grids (`pipelines.region_grids`)
# ---------------------------------------------------------------------------------------------


def test_photo_captions_plain_text_min_count_vocabulary_and_blocks():
    from pipelines import region_grids, text_pairs

    assert region_grids.plain("A dog's ball , red-and-white .") == "a dog's ball red and white"
    train = [["A dog runs .", "A dog runs fast .", "The dog runs"],
             ["A cat sleeps .", "A dog sleeps !", "A cat naps"]]
    text = region_grids.photo_captions({"train": train, "validation": train[:1]}, min_count=2,
                                       max_words=3)
    vocabulary = text.tokenizer.vocabulary
    assert vocabulary[:2] == [text_pairs.START_TOKEN, text_pairs.END_TOKEN]
    assert set(vocabulary[2:]) == {"a", "dog", "runs", "cat", "sleeps"}  # seen twice or more
    assert vocabulary[2:4] == ["a", "dog"]  # most frequent first
    assert "." not in vocabulary and text.per_photo == 3 and text.length == 3
    blocks = text.blocks["train"]
    assert blocks.shape == (2, 3, 5) and text.blocks["validation"].shape == (1, 3, 5)
    words = ["", "[UNK]", *vocabulary]
    assert [words[i] for i in blocks[1, 2]] == ["[start]", "a", "cat", "[UNK]", "[end]"]
    assert [words[i] for i in blocks[0, 1]] == ["[start]", "a", "dog", "runs", "[end]"]  # cut


def test_grid_batches_read_each_photo_once_per_epoch_with_all_its_captions(tmp_path):
    from pipelines import region_grids

    count, per_photo, length = 10, 3, 4
    path = tmp_path / "train.npy"
    grids = np.lib.format.open_memmap(path, "w+", np.float16, (count, 4, 6))
    grids[:] = np.arange(count, dtype=np.float16)[:, None, None]  # each grid holds its row
    grids.flush()
    blocks = (np.arange(count)[:, None, None] * 100 + np.arange(per_photo)[None, :, None]
              + np.zeros(length, int)).astype(np.int32)
    data = region_grids.grid_batches(np.load(path, mmap_mode="r"), blocks, 4, shuffle=True,
                                     seed=3)
    assert int(data.cardinality()) == 3
    seen = []
    for (regions, captions_in), captions_out in data:
        assert regions.dtype == tf.float16 and regions.shape[1:] == (4, 6)
        assert captions_in.shape[1:] == (per_photo, length - 1)
        assert captions_out.shape == (regions.shape[0] * per_photo, length - 1)
        rows = regions.numpy()[:, 0, 0].astype(int)
        # the captions of each photo are its own, rows b * K + k
        first = captions_in.numpy()[:, :, 0]
        np.testing.assert_array_equal(first // 100, np.repeat(rows[:, None], per_photo, axis=1))
        np.testing.assert_array_equal(first % 100, np.tile(np.arange(per_photo), (len(rows), 1)))
        np.testing.assert_array_equal(captions_out.numpy()[:, 0] // 100, np.repeat(rows,
                                                                                   per_photo))
        seen.extend(rows)
    assert sorted(seen) == list(range(count))
    other = [int(r) for (g, _), _ in region_grids.grid_batches(
        np.load(path, mmap_mode="r"), blocks, 4, shuffle=True, seed=4) for r in g[:, 0, 0]]
    assert sorted(other) == list(range(count)) and other != seen  # another epoch's order
