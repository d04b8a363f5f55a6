"""The LiteRT runner: no TensorFlow inside, the same digits as Keras."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps import digit_ocr
from pipelines import images
from serving import litert

PROJECT = Path(__file__).resolve().parents[1]


def test_importing_the_runner_does_not_import_tensorflow():
    check = ("import sys, serving.litert, pipelines.digit_frames; "
             "loaded = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
             "print(loaded); sys.exit(1 if loaded else 0)")
    completed = subprocess.run([sys.executable, "-c", check], cwd=PROJECT, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_float32_model_gives_keras_digits_on_the_whole_test_split(trained_run, exported, digits):
    model, _ = digit_ocr.load_run(trained_run)
    pixels, _ = images.labelled_arrays(digits.test)
    extra = Path(exported[1]["saved_model"]) / "assets.extra"
    runner = litert.LiteRTModel(extra / "digit_ocr_float32.tflite").signature("predict_pixels")
    on_phone = runner(pixels=pixels)["probabilities"].argmax(axis=1)
    np.testing.assert_array_equal(on_phone, model.predict(pixels, verbose=0).argmax(axis=1))


def test_command_line_reads_image_files_as_digit_ocr_does(trained_run, exported, digits, tmp_path,
                                                          capsys):
    files = []
    for i, (frame, _) in enumerate(digits.test.skip(100).take(30)):
        path = tmp_path / f"digit{i}.png"
        picture = 255 - np.kron(frame.numpy()[..., 0], np.ones((2, 2), dtype=np.uint8))
        Image.fromarray(picture).save(path)
        files.append(path)
    row = tmp_path / "row.png"
    strip = np.concatenate([np.asarray(Image.open(f)) for f in files[:5]], axis=1)
    Image.fromarray(strip).save(row)
    files.append(row)
    keras_text = [r["text"] for r in digit_ocr.predict(files, trained_run)]

    extra = Path(exported[1]["saved_model"]) / "assets.extra"
    litert.main([str(extra / "digit_ocr_float32.tflite"), *map(str, files)])
    lines = capsys.readouterr().out.strip().splitlines()
    litert_text = [line.split(": ")[1].split()[0] for line in lines]
    assert len(litert_text[-1]) == 5
    agree = sum(a == b for a, b in zip(litert_text, keras_text))
    assert agree >= len(files) - 1, (litert_text, keras_text)


def test_command_line_errors_are_one_line(exported, tmp_path, capsys):
    extra = Path(exported[1]["saved_model"]) / "assets.extra"
    not_a_model = tmp_path / "model.tflite"
    not_a_model.write_bytes(b"definitely not a flatbuffer")
    for argv, problem in (([str(extra / "digit_ocr_int8.tflite"), str(tmp_path / "x.png")],
                           "no such file"),
                          ([str(not_a_model), str(tmp_path / "x.npy")], "not a LiteRT model")):
        with pytest.raises(SystemExit) as exit_info:
            litert.main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and problem in err, err
