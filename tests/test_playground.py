"""The server's web page in a real headless Chromium, against `python -m serving.server` on
127.0.0.1 over small models that this file trains and exports: what a person does with each
panel (strokes on the sketch, an uploaded photo, lines of text, a seed, a form) gets what the
REST API answers a program for the same input, shown as text.

Needs Debian's `chromium` (`apt-get install chromium`; `CHROMIUM=path` for another) and
Playwright for Python, which drives it by `executable_path` (no `playwright install`). Without
them the tests are skipped, unless REQUIRE_BROWSER=1 (as `.ci/run` sets), where they fail.
Screenshots of each panel go to a temporary folder, or to PLAYGROUND_SCREENSHOTS if set
(`make screenshots` takes the README's over `make demo`'s models).
"""

import base64
import io
import json
import os
import re
import shutil
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from serving_process import Server, call

from apps import captioning, fraud, gan, speech, translation
from pipelines import audio, shape_scenes, wav
from serving import playground

PAGE_BUDGET_BYTES = 100 * 1024  # all the page's files together, first load
TINY_EPOCH = ["--epochs", "1", "--verbose", "0"]
INJECTION = "<img src=x onerror=alert(1)>"


# ---------------------------------------------------------------------------------------------
# A browser, a server and the models it serves
# ---------------------------------------------------------------------------------------------


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")


CHROMIUM_OPTIONS = ["--no-sandbox", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def driver():
    """Playwright, driving Debian's Chromium: `driver.launch(*options)`."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("Playwright for Python (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        missing.append("Chromium (apt-get install chromium)")
    if missing:
        message = f"the web page tests need {' and '.join(missing)}"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        def launch(*options):
            return playwright.chromium.launch(executable_path=executable,
                                              args=[*CHROMIUM_OPTIONS, *options])

        yield launch


@pytest.fixture(scope="module")
def browser(driver):
    chromium = driver()
    yield chromium
    chromium.close()


def build_echo_model(version_dir: Path) -> None:
    """serving_default: sentences string [N] -> translation (the sentence itself), score: a
    translator whose output is whatever it was given, markup included."""

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
        def echo(self, sentences):
            return {"translation": sentences,
                    "score": tf.cast(tf.strings.length(sentences), tf.float32)}

    echo = Echo()
    tf.saved_model.save(echo, str(version_dir), signatures={"serving_default": echo.echo})


def build_adder_model(version_dir: Path) -> None:
    """serving_default: a, b float32 [N, 3] -> sum: a signature no panel is made for."""

    class Adder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"),
                                      tf.TensorSpec([None, 3], tf.float32, name="b")])
        def add(self, a, b):
            return {"sum": a + b}

    adder = Adder()
    tf.saved_model.save(adder, str(version_dir), signatures={"serving_default": adder.add})


# Each app's smallest model that learns something, trained from its command line.
TINY_MODELS = {
    "fraud": (fraud, ["--model", "autoencoder", "--rows", "3000", *TINY_EPOCH]),
    "gan_cgan": (gan, ["--model", "cgan", "--filters", "8", *TINY_EPOCH]),
    "translation": (translation, ["--size", "600", "--units", "32", "--embedding-dim", "16",
                                  *TINY_EPOCH]),
    "captioning": (captioning, ["--scenes", "300", "--units", "32", *TINY_EPOCH]),
    "speech": (speech, ["--units", "16", "--layers", "1", *TINY_EPOCH]),
}
PANEL_KINDS = {"captioning": "caption", "digit_ocr": "sketch", "fraud": "form",
               "gan_cgan": "generator", "speech": "audio", "translation": "text", "echo": "text",
               "adder": "generic"}


@pytest.fixture(scope="module")
def model_base(exported, trained_run, tmp_path_factory):
    """The tiny models, or for `make screenshots` the ones `make demo` exported where it has
    (PLAYGROUND_MODEL_BASE=saved_models), copied: the tests never write there."""
    demo = Path(os.environ.get("PLAYGROUND_MODEL_BASE") or tmp_path_factory.mktemp("no_demo"))
    base = tmp_path_factory.mktemp("served")
    shutil.copytree(demo / "digit_ocr" if (demo / "digit_ocr").is_dir()
                    else exported[0] / "digit_ocr", base / "digit_ocr")
    runs = tmp_path_factory.mktemp("tiny_runs")
    for name, (app, options) in TINY_MODELS.items():
        if (demo / name).is_dir():
            shutil.copytree(demo / name, base / name)
            continue
        judge = ["--evaluator", str(trained_run)] if app is gan else []
        app.main(["train", *options, *judge, "--run-dir", str(runs / name)])
        app.main(["export", "--run-dir", str(runs / name), "--model-base", str(base)])
    if not os.environ.get("PLAYGROUND_MODEL_BASE"):  # the README's picture shows the apps only
        build_echo_model(base / "echo" / "1")
        build_adder_model(base / "adder" / "1")
    return base


@pytest.fixture(scope="module")
def server(model_base):
    running = Server(model_base, ready="digit_ocr")
    deadline = time.monotonic() + 120
    while {m["name"] for m in call(f"{running.url}/playground/models.json")[1]["models"]} \
            != {model.name for model in model_base.iterdir()}:
        assert time.monotonic() < deadline, "the server did not load every model"
        time.sleep(0.3)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = Path(os.environ.get("PLAYGROUND_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser, server):
    """The page, loaded and ready, in a fresh browser context; fails on any script error or
    dialog (an alert would be markup run as code)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    problems = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on("console", lambda message: message.type == "error" and problems.append(
        f"console: {message.text}"))
    opened.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"),
                                        dialog.dismiss()))
    opened.goto(f"{server.url}/")
    opened.wait_for_selector("body[data-ready=true]")
    yield opened
    context.close()
    # A rejected request logs its status as a console error: only the ones a test expects.
    unexpected = [p for p in problems if "status of 4" not in p]
    assert not unexpected, unexpected


def panel(page, model: str):
    return page.locator(f'section[data-model="{model}"]')


def predict_and_wait(page, model: str, action) -> dict:
    """Runs `action` (a click, strokes, an upload), waits for the panel's :predict answer and
    for the page to have shown its newest request's; returns the request the page sent."""
    with page.expect_response(lambda r: r.url.endswith(f"/v1/models/{model}:predict")) as sent:
        action()
    page.wait_for_function(
        "model => { const s = document.querySelector(`section[data-model=\"${model}\"]`);"
        " return s.dataset.sent && s.dataset.done === s.dataset.sent; }", arg=model)
    return json.loads(sent.value.request.post_data)


def shown_number(text: str) -> float:
    """The number in a text the page wrote ("Score 0.5428 against ...": 0.5428)."""
    return float(re.search(r"-?[\d,]+(?:\.\d+)?", text)[0].replace(",", ""))


def served(server, model: str, body: dict) -> dict:
    status, answer = call(f"{server.url}/v1/models/{model}:predict", body)
    assert status == 200, answer
    return answer


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def test_a_panel_for_each_model_chosen_from_its_signature(page, server, screenshots):
    kinds = {section.get_attribute("data-model"): section.get_attribute("data-kind")
             for section in page.locator("section.panel").all()}
    assert kinds == PANEL_KINDS
    assert page.locator("nav a").all_inner_texts() == sorted(PANEL_KINDS)
    page.screenshot(path=screenshots / "page-loaded.png", full_page=True)


def test_first_load_is_small_and_nothing_comes_from_elsewhere(browser, server):
    context = browser.new_context()
    loaded = context.new_page()
    sizes, origins = {}, set()

    def count(response):
        origins.add(response.url.split("/")[2])
        if "/v1/models/" not in response.url and "models.json" not in response.url:
            sizes[response.url] = len(response.body())

    loaded.on("response", count)
    started = time.perf_counter()
    loaded.goto(f"{server.url}/")
    loaded.wait_for_selector("body[data-ready=true]")
    ready_s = time.perf_counter() - started
    context.close()
    assert origins == {server.url.split("/")[2]}
    total = sum(sizes.values())
    print(f"first load: {total:,} bytes in {len(sizes)} files; panels ready after "
          f"{ready_s * 1000:.0f} ms")
    assert set(sizes) == {f"{server.url}/", *(f"{server.url}/playground/{name}" for name in
                                               ("playground.js", "playground.css", "icon.svg"))}
    assert total < PAGE_BUDGET_BYTES


def test_security_headers_and_no_file_outside_the_pages_folder(server):
    with urllib.request.urlopen(f"{server.url}/") as response:
        policy = response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    for path in ("/playground/../server.py", "/playground/%2e%2e%2fserver.py",
                 "/playground/index.html", "/playground/playground.py", "/serving/server.py",
                 "/playground/..%2Fplayground.py"):
        status, body = call(f"{server.url}{path}")
        assert status == 404 and "error" in body, path
    assert set(playground.page_files()) == {"index.html", "playground.js", "playground.css",
                                            "icon.svg"}


def test_the_page_fits_a_phone_screen(browser, server, screenshots):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    phone.goto(f"{server.url}/")
    phone.wait_for_selector("body[data-ready=true]")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=screenshots / "phone.png")
    context.close()


# ---------------------------------------------------------------------------------------------
# Digit OCR: the sketch
# ---------------------------------------------------------------------------------------------


def draw(page, model: str, strokes: list[list[tuple[float, float]]]) -> None:
    """Mouse strokes on the sketch; points in [0, 1] of its width and height."""
    box = panel(page, model).locator("canvas").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=2)
        page.mouse.up()


def read_digit(page) -> str:
    return panel(page, "digit_ocr").locator(".answer .value").inner_text()


def test_a_vertical_stroke_is_read_as_a_1(page, screenshots):
    stroke = [(0.5, 0.15 + 0.05 * i) for i in range(15)]
    predict_and_wait(page, "digit_ocr", lambda: draw(page, "digit_ocr", [stroke]))
    assert read_digit(page) == "1"
    panel(page, "digit_ocr").screenshot(path=screenshots / "digit_ocr.png")


def test_a_finger_draws_on_the_sketch_without_scrolling_the_page(browser, server):
    """Touch strokes (as a phone sends them) draw: a vertical swipe on the sketch is a 1, and
    the page under it does not scroll."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    phone = context.new_page()
    phone.goto(f"{server.url}/")
    phone.wait_for_selector("body[data-ready=true]")
    canvas = panel(phone, "digit_ocr").locator("canvas")
    canvas.scroll_into_view_if_needed()
    box, scrolled = canvas.bounding_box(), phone.evaluate("window.scrollY")
    touch = context.new_cdp_session(phone)
    x = box["x"] + box["width"] / 2
    points = [box["y"] + box["height"] * (0.15 + 0.05 * i) for i in range(15)]

    def swipe():
        touch.send("Input.dispatchTouchEvent", {"type": "touchStart",
                                                "touchPoints": [{"x": x, "y": points[0]}]})
        for y in points[1:]:
            touch.send("Input.dispatchTouchEvent", {"type": "touchMove",
                                                    "touchPoints": [{"x": x, "y": y}]})
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    predict_and_wait(phone, "digit_ocr", swipe)
    assert read_digit(phone) == "1"
    assert phone.evaluate("window.scrollY") == scrolled
    context.close()


def traced(frame: np.ndarray, ink: float = 128) -> list[list[tuple[float, float]]]:
    """A [28, 28] digit as strokes: one along each row's run of ink, as a pen would fill it."""
    strokes = []
    for row in range(frame.shape[0]):
        columns = np.flatnonzero(frame[row] > ink)
        if not len(columns):
            continue
        runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
        for run in runs:
            y = (row + 0.5) / frame.shape[0]
            strokes.append([((run[0] + 0.5) / frame.shape[1], y),
                            ((run[-1] + 0.5) / frame.shape[1], y)])
    return strokes


def test_strokes_traced_from_held_out_digits_are_read_as_their_labels(page, digits, server):
    frames, labels = [], []
    for frame, label in digits.test.take(60):
        if int(label) not in labels:  # one of each digit
            frames.append(frame.numpy()[..., 0])
            labels.append(int(label))
    read = []
    for frame in frames:
        page.click("#model-digit_ocr button:has-text('Clear')")
        predict_and_wait(page, "digit_ocr",
                         lambda frame=frame: draw(page, "digit_ocr", traced(frame)))
        read.append(int(read_digit(page)))
    # The model's own reading of the same frames as PNG: the page is judged, not the model.
    pngs = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG")
        pngs.append({"images": {"b64": base64.b64encode(buffer.getvalue()).decode()}})
    direct = [row["digit"] for row in served(server, "digit_ocr", {"instances": pngs})
              ["predictions"]]
    right = sum(r == label for r, label in zip(read, labels))
    print(f"traced digits read right: {right} of {len(labels)} (the PNGs: "
          f"{sum(d == label for d, label in zip(direct, labels))})")
    assert right >= len(labels) - 1, (read, labels, direct)


def test_an_uploaded_image_is_read_as_the_api_reads_it(page, server, digits, tmp_path):
    frame = next(iter(digits.test.take(1)))[0].numpy()[..., 0]
    path = tmp_path / "digit.png"
    Image.fromarray(255 - frame).resize((84, 84)).save(path)  # dark on light, larger
    sent = predict_and_wait(page, "digit_ocr", lambda: panel(page, "digit_ocr")
                            .locator("input[type=file]").set_input_files(path))
    assert base64.b64decode(sent["instances"][0]["images"]["b64"]) == path.read_bytes()
    expected = served(server, "digit_ocr", sent)["predictions"][0]
    assert read_digit(page) == str(expected["digit"])
    shown = panel(page, "digit_ocr").locator(".bars .value").all_inner_texts()
    assert shown == [f"{100 * p:.1f}%" for p in expected["probabilities"]]


# ---------------------------------------------------------------------------------------------
# Captioning, speech, translation, the cGAN, fraud and any other signature
# ---------------------------------------------------------------------------------------------


def test_an_uploaded_photo_gets_the_caption_the_api_gives(page, server, tmp_path, screenshots):
    photo = tmp_path / "photo.jpg"
    pixels = np.random.default_rng(3).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(photo, quality=90)
    sent = predict_and_wait(page, "captioning", lambda: panel(page, "captioning")
                            .locator("input[type=file]").set_input_files(photo))
    expected = served(server, "captioning", sent)["predictions"][0]
    section = panel(page, "captioning")
    assert section.locator(".caption").inner_text() == expected["caption"].strip()
    assert shown_number(section.locator(".score").inner_text()) == pytest.approx(
        expected["score"], abs=1e-4)
    section.screenshot(path=screenshots / "captioning.png")


def test_a_rejected_request_shows_the_servers_message(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    predict_and_wait(page, "captioning", lambda: panel(page, "captioning")
                     .locator("input[type=file]").set_input_files(broken))
    error = panel(page, "captioning").locator(".error").inner_text()
    assert error.startswith("Error 400: ") and "image" in error.lower(), error

    large = tmp_path / "large.png"  # over the server's 1 MB body limit
    large.write_bytes(os.urandom(1_200_000))
    predict_and_wait(page, "captioning", lambda: panel(page, "captioning")
                     .locator("input[type=file]").set_input_files(large))
    error = panel(page, "captioning").locator(".error").inner_text()
    assert error.startswith("Error 413: Request body over"), error
    assert panel(page, "captioning").locator(".output").inner_text() == ""


def a_recording(folder: Path) -> Path:
    """One spoken digit of the embedded FSDD subset, as a WAV file in `folder`."""
    with zipfile.ZipFile(audio.EMBEDDED) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".wav"))
        recording = folder / Path(name).name
        recording.write_bytes(archive.read(name))
    return recording


def test_a_wav_upload_is_heard_as_the_api_hears_it(page, server, tmp_path, screenshots):
    recording = a_recording(tmp_path)
    sent = predict_and_wait(page, "speech", lambda: panel(page, "speech")
                            .locator("input[type=file]").set_input_files(recording))
    expected = served(server, "speech", sent)["predictions"][0]
    assert panel(page, "speech").locator(".answer .value").inner_text() == str(expected["digit"])
    panel(page, "speech").screenshot(path=screenshots / "speech.png")


def test_a_digit_said_into_the_microphone_is_heard_as_the_api_hears_it(driver, server, tmp_path):
    """Chromium's fake microphone plays a recording padded with silence: the page records it,
    cuts the silence, sends it as a WAV and shows what the model heard."""
    spoken = wav.read_wav(a_recording(tmp_path))  # 8 kHz
    played = np.concatenate([np.zeros(14_400), wav.resample(spoken, wav.SAMPLE_RATE, 48_000),
                             np.zeros(48_000)])  # 0.3 s of silence, the digit, 1 s of silence
    wav.write_wav(tmp_path / "microphone.wav", played, rate=48_000)
    chromium = driver("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-audio-capture={tmp_path / 'microphone.wav'}%noloop")
    try:
        page = chromium.new_context(permissions=["microphone"]).new_page()
        page.goto(f"{server.url}/")
        page.wait_for_selector("body[data-ready=true]")
        sent = predict_and_wait(page, "speech", lambda: panel(page, "speech")
                                .locator("button:has-text('Record')").click())
        heard = panel(page, "speech").locator(".answer .value").inner_text()
    finally:
        chromium.close()
    recorded = wav.read_wav(base64.b64decode(sent["instances"][0]["audio"]["b64"]))
    # The take is cut to the digit and a little quiet, and it is the digit that was played.
    assert len(spoken) <= len(recorded) < len(spoken) + 0.2 * wav.SAMPLE_RATE
    alignment = max(
        np.dot(recorded[shift : shift + len(spoken)], spoken[: len(recorded) - shift])
        / np.linalg.norm(recorded[shift : shift + len(spoken)]) / np.linalg.norm(spoken)
        for shift in range(len(recorded) - len(spoken) + 1))
    assert alignment > 0.9
    assert heard == str(served(server, "speech", sent)["predictions"][0]["digit"])


def test_two_lines_typed_get_two_translations(page, server, screenshots):
    box = panel(page, "translation").locator("textarea")
    box.focus()
    page.keyboard.type("ninety-seven\nthe first of may")
    sent = predict_and_wait(page, "translation", lambda: page.keyboard.press("Control+Enter"))
    assert sent == {"instances": [{"sentences": "ninety-seven"},
                                  {"sentences": "the first of may"}]}
    expected = served(server, "translation", sent)["predictions"]
    shown = panel(page, "translation").locator(".results li")
    assert shown.count() == 2
    assert [t.strip() for t in shown.locator(".translation").all_inner_texts()] == \
        [row["translation"].strip() for row in expected]
    panel(page, "translation").screenshot(path=screenshots / "translation.png")


def test_model_output_is_shown_as_text_never_as_markup(page):
    panel(page, "echo").locator("textarea").fill(f"{INJECTION}\n<b>bold</b>")
    predict_and_wait(page, "echo", lambda: panel(page, "echo").locator("button").first.click())
    section = panel(page, "echo")
    assert section.locator(".translation").all_inner_texts() == [INJECTION, "<b>bold</b>"]
    assert section.locator(".output img, .output b").count() == 0
    assert INJECTION in section.locator("details.request code").text_content()


def test_the_cgan_panel_shows_the_digits_asked_for(page, screenshots):
    section = panel(page, "gan_cgan")
    section.locator("select").select_option("3")
    sent = predict_and_wait(page, "gan_cgan",
                            lambda: section.locator("button:has-text('Generate')").click())
    assert sent["signature_name"] == "generate_png"
    assert [row["label"] for row in sent["instances"]] == [3] * 8
    images = section.locator(".grid img")
    assert images.count() == 8
    assert images.evaluate_all("all => all.every(i => i.complete && i.naturalWidth === 28)")
    first = images.evaluate_all("all => all.map(i => i.src)")
    section.screenshot(path=screenshots / "gan_cgan.png")

    predict_and_wait(page, "gan_cgan",
                     lambda: section.locator("button:has-text('Generate')").click())
    assert images.evaluate_all("all => all.map(i => i.src)") == first  # the seed decides
    section.locator("input[type=number]").first.fill("2")
    predict_and_wait(page, "gan_cgan",
                     lambda: section.locator("button:has-text('Generate')").click())
    assert images.evaluate_all("all => all.map(i => i.src)") != first


def test_the_fraud_form_scores_a_normal_row_and_flags_an_odd_one(page, server, screenshots):
    section = panel(page, "fraud")
    sent = predict_and_wait(page, "fraud", lambda: section.locator("button:has-text('Score')")
                            .click())
    expected = served(server, "fraud", sent)["predictions"][0]
    assert not expected["is_anomaly"]
    assert section.locator(".verdict").inner_text() == "normal"
    assert shown_number(section.locator(".answer .value").inner_text()) == pytest.approx(
        expected["score"], abs=1e-4)
    section.screenshot(path=screenshots / "fraud.png")

    section.get_by_label("amount_ratio").fill("400")
    section.get_by_label("distance_km").fill("3000")
    sent = predict_and_wait(page, "fraud", lambda: section.get_by_label("distance_km")
                            .press("Enter"))
    assert served(server, "fraud", sent)["predictions"][0]["is_anomaly"]
    assert section.locator(".verdict").inner_text() == "flagged as anomalous"


def test_any_other_signature_gets_a_json_request_box(page):
    section = panel(page, "adder")
    assert "DT_FLOAT" in section.locator("table").inner_text()
    section.locator("textarea").fill('{"instances": [{"a": [1, 2, 3], "b": [10, 20, 30]}]}')
    predict_and_wait(page, "adder", lambda: section.locator("button:has-text('Send')").click())
    assert json.loads(section.locator("pre.json").inner_text()) == {
        "predictions": [[11.0, 22.0, 33.0]]}
    section.locator("textarea").fill('{"instances": [{"a": [1, 2], "b": [1, 2]}]}')
    predict_and_wait(page, "adder", lambda: section.locator("button:has-text('Send')").click())
    assert section.locator(".error").inner_text().startswith("Error 400: ")


def test_every_panel_used_on_one_page(page, tmp_path, screenshots):
    """The picture in the README: each app's panel after a person has used it."""
    two = [(0.3 + 0.2 * (1 - np.cos(a)), 0.3 - 0.15 * np.sin(a)) for a in np.linspace(0, 2.6, 12)]
    two += [(0.3, 0.8), (0.72, 0.8)]
    predict_and_wait(page, "digit_ocr", lambda: draw(page, "digit_ocr", [two]))
    panel(page, "translation").locator("textarea").fill(
        "June 16, 2003\nseven thousand, seven hundred and nineteen")
    predict_and_wait(page, "translation", lambda: panel(page, "translation")
                     .locator("button:has-text('Translate')").click())
    panel(page, "gan_cgan").locator("select").select_option("7")
    predict_and_wait(page, "gan_cgan", lambda: panel(page, "gan_cgan")
                     .locator("button:has-text('Generate')").click())
    predict_and_wait(page, "fraud", lambda: panel(page, "fraud")
                     .locator("button:has-text('Score')").click())
    things = [shape_scenes.Thing("big", "red", "circle"), shape_scenes.Thing("small", "blue",
                                                                              "square")]
    scene = tmp_path / "scene.png"
    Image.fromarray(shape_scenes.draw(things, [0, 2], np.random.default_rng(5))).resize(
        (192, 192), Image.NEAREST).save(scene)
    predict_and_wait(page, "captioning", lambda: panel(page, "captioning")
                     .locator("input[type=file]").set_input_files(scene))
    predict_and_wait(page, "speech", lambda: panel(page, "speech")
                     .locator("input[type=file]").set_input_files(a_recording(tmp_path)))
    errors = [text for text in page.locator(".panel .error").all_inner_texts() if text]
    assert not errors
    page.screenshot(path=screenshots / "page.png", full_page=True)
