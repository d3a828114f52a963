"""`catsdogs web`: the HTTP API's answers and refusals, concurrent requests, and the page in a real browser."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deployments.web import create_app
from tests.conftest import copy_models, free_port, jpeg_bytes, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registered(tiny_models, tmp_path_factory):
    made = copy_models(tiny_models, tmp_path_factory.mktemp("web"), keep=[0])
    card, metrics = made["models"][0]
    return made | {"card": card, "metrics": metrics}


@pytest.fixture(scope="module")
def client(registered):
    return TestClient(create_app(registered["workdir"], max_files=4, max_request_bytes=2_000_000))


def test_health_names_the_model_and_runtime(client, registered):
    assert client.get("/healthz").json() == {"status": "ok", "model": registered["card"].name, "runtime": "litert",
                                             "image_size": 78}


def test_predict_answers_each_file_as_the_cli_does(client, registered):
    test = sorted((registered["subsets"].root / "test").rglob("*.jpg"))
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in test[:3]]
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))
    answers = client.post("/predict", files=files).json()
    assert [a["path"] for a in answers] == [p.name for p in test[:3]] + ["notes.txt"]
    recorded = {Path(r["file"]).name: r["dog_probability"]
                for r in json.loads(registered["metrics"].predictions_path.read_text())}
    for answer in answers[:3]:
        dog = answer["probability"] if answer["label"] == "dog" else 1 - answer["probability"]
        assert dog == pytest.approx(recorded[answer["path"]], abs=1e-5)
    assert "not an image" in answers[3]["error"] and set(answers[3]) == {"path", "error"}


def test_refusals_are_clear_4xx(client):
    image = ("files", ("a.jpg", jpeg_bytes((200, 60, 60)), "image/jpeg"))
    too_many = client.post("/predict", files=[image] * 5)
    assert too_many.status_code == 400 and "at most 4 files" in too_many.json()["error"]
    big = client.post("/predict", files=[("files", ("big.jpg", os.urandom(2_100_000), "image/jpeg"))])
    assert big.status_code == 413 and "more than the 2,000,000 allowed" in big.json()["error"]
    wrong = client.post("/predict", content=b'{"x": 1}', headers={"content-type": "application/json"})
    assert wrong.status_code == 415 and "multipart/form-data" in wrong.json()["error"]
    form = client.post("/predict", data={"note": "no files"})  # a urlencoded form: not multipart
    assert form.status_code == 415
    no_files = client.post("/predict", files={"note": (None, "only a text field")})  # multipart, no file in it
    assert no_files.status_code == 400 and no_files.json()["error"].startswith("no files")
    assert "file fields" in no_files.json()["error"]  # of any name, as the next request shows
    other_name = client.post("/predict", files=[("photo", image[1])])
    assert other_name.status_code == 200 and other_name.json()[0]["path"] == "a.jpg"


def test_each_refusal_says_what_is_wrong_with_that_request(client):
    malformed = client.post("/predict", content=b"--x\r\nno headers here\r\n",
                            headers={"content-type": "multipart/form-data; boundary=x"})
    assert malformed.status_code == 400, malformed.text
    assert "malformed multipart" in malformed.json()["error"] and "at most" not in malformed.json()["error"]
    fields = client.post("/predict", data={f"note{n}": "x" for n in range(6)},
                         files=[("files", ("a.jpg", jpeg_bytes((200, 60, 60)), "image/jpeg"))])
    assert fields.status_code == 400 and fields.json()["error"].endswith("send only file fields, at most 4 per request")
    no_boundary = client.post("/predict", content=b"abc", headers={"content-type": "multipart/form-data"})
    assert no_boundary.status_code == 400 and "at most" not in no_boundary.json()["error"]
    for path in ("/", "/healthz", "/examples", "/examples/cat-1"):  # HEAD is GET without the body (monitors
        head = client.head(path)                                       # and link checkers send it)
        assert head.status_code == 200 and head.content == b"", path
    # the server's own refusals have the shape of the app's: {"error": ...}
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong_method = client.delete("/predict")
    assert wrong_method.status_code == 405 and wrong_method.json() == {"error": "Method Not Allowed"}
    assert wrong_method.headers["allow"] == "POST"


def test_a_client_that_leaves_mid_upload_is_let_go_without_an_error_in_the_log(client, caplog):
    """A closed tab while its photos upload: Starlette's ClientDisconnect, which went to the log as an ERROR with
    a 60-line traceback for each such request."""
    import anyio

    app, sent = client.app, []
    messages = [{"type": "http.request", "more_body": True, "body": b'--x\r\nContent-Disposition: form-data; '
                 b'name="files"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff'},
                {"type": "http.disconnect"}]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"content-type", b"multipart/form-data; boundary=x"),
                         (b"content-length", b"100000")], "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    with caplog.at_level("WARNING"):
        anyio.run(app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


def test_health_answers_while_photos_are_classified_and_a_full_queue_gets_503(registered, monkeypatch):
    """Decoding and inference run off the event loop: while a request's photos are held in the middle of their
    decoding, /healthz still answers (a handler blocking the loop would hang it, and the timeout fail the test);
    with the waiting room full, one more request is told to come back (503, Retry-After)."""
    import time

    import requests
    import uvicorn

    from catsdogs import lite

    app = create_app(registered["workdir"], max_waiting=1)
    holding, release = threading.Event(), threading.Event()
    real_load = lite.LitePredictor.load

    def slow_load(self, path):
        holding.set()
        release.wait(60)
        return real_load(self, path)

    monkeypatch.setattr(lite.LitePredictor, "load", slow_load)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    image = ("files", ("a.jpg", jpeg_bytes((200, 60, 60)), "image/jpeg"))
    heavy: list = []
    asker = threading.Thread(target=lambda: heavy.append(requests.post(f"{url}/predict", files=[image], timeout=60)))
    asker.start()
    try:
        assert holding.wait(30), "the request never reached decoding"
        assert requests.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
        assert requests.head(f"{url}/", timeout=10).status_code == 200
        busy = requests.post(f"{url}/predict", files=[image], timeout=10)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "busy: 1 requests are waiting" in busy.json()["error"]
    finally:
        release.set()
        asker.join(60)
        server.should_exit = True
        thread.join(30)
    assert heavy[0].status_code == 200 and heavy[0].json()[0]["label"] in ("cat", "dog")


def test_a_request_over_the_pixel_budget_is_413_naming_it(registered):
    client = TestClient(create_app(registered["workdir"], max_request_pixels=50_000))
    image = ("files", ("a.jpg", jpeg_bytes((200, 60, 60), size=200), "image/jpeg"))  # 40,000 pixels
    assert client.post("/predict", files=[image]).status_code == 200
    over = client.post("/predict", files=[image, image])
    assert over.status_code == 413
    assert over.json()["error"] == ("the images hold 80,000 pixels together, more than the 50,000 a request may; "
                                    "send fewer or smaller images")
    # what will not be decoded is not counted: files refused on their own (bombs) leave the others their answers
    from tests.test_predict import bomb_jpeg

    bombs = [("files", (f"bomb{n}.jpg", bomb_jpeg(), "image/jpeg")) for n in (1, 2)]
    answers = client.post("/predict", files=[*bombs, image]).json()
    assert ["decompression bomb" in answer.get("error", "") for answer in answers] == [True, True, False]
    assert answers[2]["label"] in ("cat", "dog")


def test_heic_photos_count_in_the_pixel_budget_from_the_first(registered, monkeypatch):
    """The budget is read from each file's header before anything is decoded: a HEIC's too, even when it is the
    first this process meets (Pillow learns HEIC only then), or two large iPhone photos would pass as none."""
    import pillow_heif
    from PIL import Image

    from catsdogs import images

    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (200, 200), (200, 60, 60))).save(heic, quality=50)  # 40,000 pixels
    # as in a new process: Pillow without HEIF, the library not yet asked to teach it (both put back afterwards)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    monkeypatch.setattr(images, "_read_heif", functools.cache(images._read_heif.__wrapped__))
    client = TestClient(create_app(registered["workdir"], max_request_pixels=50_000))
    photo = ("files", ("IMG_0001.HEIC", heic.getvalue(), "image/heic"))
    over = client.post("/predict", files=[photo, photo])
    assert over.status_code == 413 and "80,000 pixels" in over.json()["error"]
    assert client.post("/predict", files=[photo]).json()[0]["label"] in ("cat", "dog")


def test_a_thumbnail_is_the_photo_as_shown_and_anything_else_a_clear_error(client):
    """The page asks for the drawings of what the browser cannot draw: an iPhone's HEIC, turned as its EXIF says."""
    import pillow_heif

    upright = np.zeros((600, 400, 3), np.uint8)
    upright[:150] = 255  # white along the top of the picture as it is shown
    exif = Image.Exif()
    exif[0x0112] = 6
    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))).save(
        heic, quality=90, exif=exif.tobytes())
    drawn = client.post("/thumbnail", files=[("files", ("IMG_0002.HEIC", heic.getvalue(), "image/heic"))])
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/jpeg"
    picture = np.asarray(Image.open(io.BytesIO(drawn.content)).convert("RGB"))
    assert picture.shape[:2] == (320, 213) and picture[:40].min() > 200 and picture[-40:].max() < 60

    text = client.post("/thumbnail", files=[("files", ("notes.jpg", b"plain text", "image/jpeg"))])
    assert text.status_code == 422 and text.json()["error"] == "notes.jpg: not an image file (unrecognised format)"
    from tests.test_predict import broken_avif  # a decoder that fails with a RuntimeError: 422 too, never 500

    broken = client.post("/thumbnail", files=[("files", ("IMG_0003.avif", broken_avif(), "image/avif"))])
    assert broken.status_code == 422 and broken.json()["error"].startswith("IMG_0003.avif: corrupt or truncated")
    two = client.post("/thumbnail", files=[("files", ("a.jpg", jpeg_bytes((1, 2, 3)), "image/jpeg"))] * 2)
    assert two.status_code == 400 and "send at most 1 file per request" in two.json()["error"]
    assert client.post("/thumbnail", content=b"x", headers={"content-type": "image/jpeg"}).status_code == 415


def test_the_api_documentation_loads_its_scripts_from_this_server_not_a_cdn(client):
    """/docs and /redoc work on a machine that reaches no CDN: every script and style they load is served here;
    the API they describe names each operation once (FastAPI warned of duplicates where GET and HEAD shared one)."""
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        described = client.get("/openapi.json").json()
    assert not [w for w in warned if "Duplicate Operation ID" in str(w.message)]
    assert described["paths"].keys() == {"/healthz", "/examples", "/examples/{name}", "/predict", "/thumbnail"}
    for upload in ("/predict", "/thumbnail"):  # what to send, so that the docs' "Try it out" can send photos
        body = described["paths"][upload]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert body["properties"]["files"]["items"]["format"] == "binary"
    for page in ("/docs", "/redoc"):
        answer = client.get(page)
        assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
        assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", answer.text)
        assert assets, answer.text
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 10_000, asset


def test_client_file_names_never_touch_the_servers_files(client, tmp_path: Path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    names = [str(target), "../../../../etc/passwd", "/etc/passwd", "..\\\\..\\\\x.jpg"]
    answers = client.post("/predict", files=[("files", (name, b"plain text", "image/jpeg")) for name in names]).json()
    assert [a["path"] for a in answers] == names and all("error" in a for a in answers)
    assert target.read_text() == "keep me" and Path("/etc/passwd").read_text().startswith("root")


def test_concurrent_requests_are_all_answered(client):
    """Eight at once, each answered as one alone is: whatever the model's answer, none is lost or mixed up."""
    image = jpeg_bytes((60, 60, 200), seed=3)
    alone = client.post("/predict", files=[("files", ("d.jpg", image, "image/jpeg"))]).json()
    results: list[tuple[int, list]] = []

    def ask() -> None:
        response = client.post("/predict", files=[("files", ("d.jpg", image, "image/jpeg"))])
        results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8 and {status for status, _ in results} == {200}
    for _, answer in results:
        assert answer[0]["label"] == alone[0]["label"]
        assert answer[0]["probability"] == pytest.approx(alone[0]["probability"], abs=1e-6)


def test_examples_come_from_the_validation_subset_and_nothing_else(client, registered):
    root = registered["subsets"].root
    listed = client.get("/examples").json()
    assert [e["name"] for e in listed] == ["cat-1", "cat-2", "dog-1", "dog-2"]  # both validation images a class
    validation = {p.read_bytes() for p in (root / "validation").rglob("*.jpg")}
    test = {p.read_bytes() for p in (root / "test").rglob("*.jpg")}
    for example in listed:
        served = client.get(f"/{example['url']}")
        assert served.status_code == 200 and served.content in validation and served.content not in test
    for name in ("cat-9", "..%2F..%2Fmodels", "test"):
        assert client.get(f"/examples/{name}").status_code == 404


# What must not overlap on the page, top to bottom.
LAYOUT = ["h1", ".model", "#drop", "#examples", "#answers figure"]


def check_layout(page, width: int) -> None:
    """At WIDTH px, the page's blocks stack without overlapping, and the drop zone is one box."""
    page.set_viewport_size({"width": width, "height": 900})
    boxes = [page.locator(selector).first.bounding_box() for selector in LAYOUT]
    assert all(boxes), dict(zip(LAYOUT, boxes, strict=True))
    for i in range(len(LAYOUT) - 1):
        upper, lower = boxes[i], boxes[i + 1]
        assert upper["y"] + upper["height"] <= lower["y"] + 0.5, f"{LAYOUT[i]} overlaps {LAYOUT[i + 1]} at {width} px"
    for name, box in zip(LAYOUT, boxes, strict=True):
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{name} leaves the screen at {width} px"
    assert page.locator("#drop").evaluate("e => e.getClientRects().length") == 1, f"the drop zone breaks at {width}"


@pytest.mark.e2e
def test_the_page_answers_a_picked_photo_and_an_example_and_keeps_its_layout_in_a_browser(registered,
                                                                                         tmp_path: Path):
    from tests.browser import CHROMIUM_FLAGS, chromium_available, chromium_path

    if not chromium_available() and os.environ.get("CATSDOGS_REQUIRE_BROWSER") != "1":
        pytest.skip("the page check needs Debian's chromium (.ci/run installs it)")
    import pillow_heif
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "deployments.cli", "web", "--workdir", str(registered["workdir"]),
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", server, 60)
        photo = tmp_path / "my dog.jpg"
        Image.fromarray(np.full((120, 160, 3), (60, 60, 200), np.uint8)).save(photo)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            asked = []  # one request a photo: a drop of any number of large photos never outgrows one's limits
            page.on("request", lambda request: asked.append(request) if request.url.endswith("/predict") else None)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            assert registered["card"].name in page.locator("#model").inner_text()
            cat = tmp_path / "a cat.png"
            Image.fromarray(np.full((90, 90, 3), (200, 60, 60), np.uint8)).save(cat)
            notes = tmp_path / "notes.jpg"
            notes.write_text("not a photo")
            iphone = tmp_path / "IMG_0001.HEIC"  # Chromium draws no HEIC: the server draws it, upright
            exif = Image.Exif()
            exif[0x0112] = 6  # a portrait photo, stored as the sensor read it: on its side
            pillow_heif.from_pillow(Image.new("RGB", (100, 60), (90, 160, 90))).save(iphone, exif=exif.tobytes())
            # each answer under its own photo, in the order picked; a file that is no image, in a plain box
            page.set_input_files("#pick", [str(cat), str(photo), str(iphone), str(notes)])
            page.wait_for_function("() => document.querySelectorAll('figcaption .label').length == 3",
                                   timeout=30_000)
            page.locator("figure .nopreview").wait_for(timeout=30_000)
            drawn = page.wait_for_function("() => { const i = document.querySelectorAll('figure')[2].firstChild;"
                                           " return i.tagName == 'IMG' && i.complete && i.naturalWidth > 0 &&"
                                           " [i.naturalWidth, i.naturalHeight]; }", timeout=30_000).json_value()
            assert drawn == [60, 100]  # upright: taller than wide
            names = page.evaluate("() => [...document.querySelectorAll('figure')].map(f => f.firstChild.alt"
                                  " || f.firstChild.getAttribute('aria-label'))")
            assert names == ["a cat.png", "my dog.jpg", "IMG_0001.HEIC", "notes.jpg"]
            for figure, name in zip(page.locator("figure").all(), names, strict=True):
                assert name in figure.locator("figcaption").inner_text()
            assert "not an image file" in page.locator("figcaption").nth(3).inner_text()
            assert len(asked) == 4  # four photos, four requests
            assert page.evaluate("() => [...document.images].filter(i => i.complete && !i.naturalWidth).length") == 0
            label = page.locator("figcaption .label").first
            assert label.inner_text() in ("cat", "dog", "not sure: cat?", "not sure: dog?")
            caption = page.locator("figcaption").nth(1).inner_text()
            assert "my dog.jpg" in caption and re.search(r"\d+\.\d% (cat|dog) · \d+ ms", caption), caption
            width = page.locator("figcaption .bar span").first.evaluate("e => e.style.width")
            assert 50 <= float(width.rstrip("%")) <= 100  # the confidence bar: the answer's probability
            page.locator("#examples button").first.click()  # a validation photo to try
            page.locator("figure").nth(4).wait_for(timeout=30_000)
            page.wait_for_function("() => document.querySelectorAll('figcaption .label').length == 4",
                                   timeout=30_000)
            assert "cat-1.jpg" in page.locator("figcaption").first.inner_text()
            for viewport in (1280, 390):  # a desktop and a phone
                check_layout(page, viewport)
                page.screenshot(path=str(tmp_path / f"web-{viewport}.png"), full_page=True)
            page.get_by_text("its HTTP API").click()  # the API's documentation draws with no CDN to reach
            page.locator(".opblock-summary-path", has_text="/predict").first.wait_for(timeout=30_000)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)


def test_a_model_without_litert_export_is_named_by_its_registry_name(registered):
    card = registered["card"]
    moved = card.litert_path.with_suffix(".moved")
    card.litert_path.rename(moved)
    try:
        health = TestClient(create_app(registered["workdir"])).get("/healthz").json()
    finally:
        moved.rename(card.litert_path)
    assert health["model"] == card.name and health["runtime"] == "tensorflow"


def test_no_file_a_client_sends_and_no_failure_in_the_model_makes_the_server_answer_500(registered, tmp_path: Path,
                                                                                       monkeypatch):
    """The command line's hostile files, all in one request: each gets its own answer, as `catsdogs predict`
    gives it; a decoder or the model failing in a way no one foresaw is those files' error, never a 500."""
    from catsdogs import lite
    from tests.test_predict import bad_and_odd_inputs

    classified = bad_and_odd_inputs(tmp_path)
    client = TestClient(create_app(registered["workdir"]), raise_server_exceptions=False)

    def ask() -> dict[str, dict]:
        files = [("files", (name, (tmp_path / name).read_bytes() if (tmp_path / name).stat().st_size < 2**20
                                else b"\xff\xd8" + bytes(2**20), "image/jpeg")) for name in sorted(classified)]
        response = client.post("/predict", files=files)
        assert response.status_code == 200, response.text[-2000:]
        return {answer["path"]: answer for answer in response.json()}

    answers = ask()
    assert sorted(answers) == sorted(classified)
    for name, ok in classified.items():
        if name != "huge.jpg":  # sent as a megabyte of junk: the server's size limit is the request's
            assert ("label" in answers[name]) == ok, (name, answers[name])

    real_load = lite.LitePredictor.load

    def load_or_fail(self, path):
        if (path.stat().st_size % 2) == 0:
            raise RuntimeError("a decoder bug no one foresaw")
        return real_load(self, path)

    monkeypatch.setattr(lite.LitePredictor, "load", load_or_fail)
    answers = ask()
    assert any("a decoder bug no one foresaw" in answer.get("error", "") for answer in answers.values())
    monkeypatch.setattr(lite.LitePredictor, "load", real_load)
    monkeypatch.setattr(lite.LitePredictor, "predict_batch", lambda self, images: 1 / 0)
    answers = ask()
    assert all("error" in answer for answer in answers.values())
    assert any("the model failed (ZeroDivisionError" in answer["error"] for answer in answers.values())


def test_photos_are_decoded_no_more_at_once_than_there_are_cores(monkeypatch):
    """Each decoding may hold a large photo's pixels: eight requests at once on two cores decode two at a time."""
    import time

    from deployments.web import TakingTurns

    at_once, most, lock = [0], [0], threading.Lock()

    class Slow:
        name, runtime, image_size = "slow", "litert", 78

        def load(self, path: Path) -> None:
            with lock:
                at_once[0] += 1
                most[0] = max(most[0], at_once[0])
            time.sleep(0.05)
            with lock:
                at_once[0] -= 1

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    predictor = TakingTurns(Slow())
    threads = [threading.Thread(target=predictor.load, args=(Path("x.jpg"),)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


def test_where_the_page_cannot_listen_is_one_line_before_the_model_loads(tmp_path: Path):
    """An empty --host (an unset shell variable) listened on every network; a port in use and a host that is no
    address ended in uvicorn's ERROR line and exit status 3, after the model had loaded."""
    import socket

    from tests.conftest import run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = run_cli("web", "--workdir", str(tmp_path / "none"), "--port", str(port))
    assert in_use.returncode == 2 and in_use.stderr.strip().splitlines() == [
        f"catsdogs: port {port} on 127.0.0.1 is in use (another catsdogs web?); give another --port"]
    nowhere = run_cli("web", "--workdir", str(tmp_path / "none"), "--host", "nosuch.invalid", "--port", "8000")
    assert nowhere.returncode == 2 and "cannot listen on --host nosuch.invalid: " in nowhere.stderr
    for host in ("", " "):
        empty = run_cli("web", "--host", host)
        assert empty.returncode == 2 and "an empty address would listen on every network" in empty.stderr
    assert "a port is a whole number" in run_cli("web", "--port", "²").stderr
