"""The draw-and-search server: a real browser session against it, and every refusal it must make.

The server runs over a small fake engine (PNG photos of drawn shapes in a temporary folder, ranked by how close
each photo's ink fraction is to the sketch's), so these tests check real answers without a trained model.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from jsbir.serve import app as app_lib
from jsbir.serve import cli, limits
from jsbir.serve.engine import Engine, resize

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# The docs' screenshot of the page, rewritten only when JSBIR_WRITE_SCREENSHOT=1 (a test run leaves the tree as it is).
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve.png"
CLASSES = ["circle", "square", "triangle"]


def ink(image: np.ndarray) -> float:
    """The fraction of dark pixels in an (H, W, 3) uint8 image."""
    return float((image.mean(axis=-1) < 128).mean())


class FakeEngine:
    """The server's engine interface over a folder of PNG photos, ranked by closeness of ink fraction."""

    def __init__(self, folder: Path, count: int = 30):
        self.paths, self.labels, self.inks = [], [], []
        colours = [(205, 70, 60), (60, 120, 200), (70, 160, 90), (220, 160, 40), (120, 80, 170)]
        for i in range(count):
            label, size = i % len(CLASSES), 8 + (i * 7) % 48
            image = Image.new("RGB", (64, 64), "white")
            draw = ImageDraw.Draw(image)
            box = (32 - size / 2, 32 - size / 2, 32 + size / 2, 32 + size / 2)
            colour = tuple(c // 2 for c in colours[i % len(colours)])  # dark, so it counts as ink
            if CLASSES[label] == "circle":
                draw.ellipse(box, fill=colour)
            elif CLASSES[label] == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(32, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour)
            path = folder / f"photo_{i:03d}.png"
            image.save(path)
            self.paths.append(path)
            self.labels.append(label)
            self.inks.append(ink(np.asarray(image)))
        self.num_items, self.class_names = count, CLASSES
        self.queries: list[np.ndarray] = []
        self.photo_requests: list[int] = []

    def ranking(self, image: np.ndarray) -> list[int]:
        """Items from the closest ink fraction to the farthest, ties by item."""
        return sorted(range(self.num_items), key=lambda i: (abs(self.inks[i] - ink(image)), i))

    def search(self, image: np.ndarray, k: int) -> list[dict]:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
        self.queries.append(image)
        return [{"item": i, "score": 1.0 - abs(self.inks[i] - ink(image)), "label": self.labels[i],
                 "name": CLASSES[self.labels[i]]} for i in self.ranking(image)[:k]]  # fmt: skip

    def photo_path(self, item: int) -> Path:
        assert isinstance(item, int) and 0 <= item < self.num_items
        self.photo_requests.append(item)
        return self.paths[item]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def engine(tmp_path: Path) -> FakeEngine:
    return FakeEngine(tmp_path)


@pytest.fixture
def client(engine: FakeEngine):
    from starlette.testclient import TestClient

    with TestClient(app_lib.create_app(engine, k=5), base_url="http://127.0.0.1") as client:
        yield client


def test_search_ranks_by_the_sketch_and_serves_the_photos(client, engine):
    sketch = Image.new("RGBA", (100, 100), (0, 0, 0, 0))  # transparent: must count as white paper
    ImageDraw.Draw(sketch).rectangle((10, 10, 49, 59), fill="black")  # 40 x 50 px of ink: 0.2 of the page
    response = client.post("/api/search?k=4", content=png(sketch), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert ink(engine.queries[-1]) == pytest.approx(0.2)
    assert [r["item"] for r in results] == engine.ranking(engine.queries[-1])[:4]
    assert results[0]["name"] == CLASSES[engine.labels[results[0]["item"]]]
    assert results[0]["score"] >= results[-1]["score"]
    photo = client.get(results[0]["url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.content == engine.paths[results[0]["item"]].read_bytes()
    assert photo.headers["x-content-type-options"] == "nosniff"
    assert (
        client.post("/api/search", content=png(sketch), headers={"content-type": "image/png"})
        .json()["results"]
        .__len__()
        == 5
    )  # the server's default k
    info = client.get("/api/info").json()
    assert info["items"] == engine.num_items and info["classes"] == CLASSES and info["k"] == 5
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text
    for path in ("/", "/static/app.js", "/static/style.css"):  # the page refers to nothing on another server
        assert "://" not in client.get(path).text, path


def test_engine_embeds_the_resized_sketch_and_names_its_results(tmp_path):
    gallery = np.zeros((4, 4, 4), np.float32)
    gallery[np.arange(4), :, np.arange(4)] = 0.25  # photo i: ink down column i of a 4 x 4 grid, unit length

    def embed(sketch: np.ndarray) -> np.ndarray:
        assert sketch.shape == (4, 4, 3) and sketch.dtype == np.uint8
        return (255 - sketch[..., 0]).astype(np.float32) / 255  # the ink in each cell

    def rank(query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = gallery.reshape(4, 16) @ query.reshape(16)
        order = np.lexsort((np.arange(4), -scores))[:k]
        return scores[order], order

    paths = [tmp_path / f"{i}.png" for i in range(4)]
    engine = Engine(embed, rank, 4, paths, np.array([1, 0, 1, -1]), ["cat", "dog", "owl"])
    sketch = np.full((200, 100, 3), 255, np.uint8)
    sketch[:, 50:75] = 0  # ink all the way down the third quarter of the width
    small = resize(sketch, 4)[..., 0]  # antialiased: most ink in column 2, a little spilt into its neighbours
    assert (small[:, 2] < 80).all() and (small[:, [1, 3]] > 200).all() and (small[:, 0] == 255).all()
    results = engine.search(sketch, 2)
    assert [(r["item"], r["label"], r["name"]) for r in results] == [
        (2, 1, "dog"),
        (3, -1, ""),
    ]  # -1: a class the index does not know
    assert results[0]["score"] == pytest.approx((255 - 64) / 255) and results[1]["score"] == pytest.approx(36 / 255)
    assert engine.num_items == 4
    assert engine.photo_path(3) == paths[3]


def test_refuses_oversized_uploads_by_header_and_by_stream(client, engine):
    big = b"\x89PNG" + b"\0" * (limits.MAX_UPLOAD_BYTES + 1)
    response = client.post("/api/search", content=big, headers={"content-type": "image/png"})
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(40):
            yield b"\0" * 65536

    response = client.post("/api/search", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    response = client.post("/api/search", content=b"x", headers={"content-type": "image/png", "content-length": "x"})
    assert response.status_code == 400
    assert engine.queries == []


def test_read_limited_cuts_off_a_slow_body():
    async def trickle():
        yield b"\x89PNG"
        await asyncio.sleep(5)
        yield b"never"

    with pytest.raises(limits.RequestError) as refused:
        asyncio.run(limits.read_limited(trickle(), timeout_s=0.2))
    assert refused.value.status == 408


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (with a correct CRC), its pixel data unchanged."""
    header = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"hello, not an image", "text/plain", 415),
        (b"hello, not an image", "image/png", 415),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", 415),
        (png(Image.new("RGB", (8, 8))), None, 415),
        (png(Image.new("RGB", (4097, 1))), "image/png", 422),
        (_with_size(png(Image.new("L", (1, 1))), 50_000, 50_000), "image/png", 422),  # a decompression bomb
        (png(Image.new("RGB", (64, 64), "white"))[:60], "image/png", 400),  # truncated
        (b"", "image/png", 400),
    ],
)
def test_refuses_what_is_not_a_decodable_image(client, engine, body, content_type, status):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/api/search", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json" and response.json()["error"]
    assert engine.queries == []


@pytest.mark.parametrize(
    ("path", "statuses"),
    [
        ("/photo/../../etc/passwd", (400, 404)),
        ("/photo/%2e%2e%2f%2e%2e%2fetc%2fpasswd", (404,)),
        ("/photo/..%2F..%2F..%2Fetc%2Fpasswd", (404,)),
        ("/photo/%2e%2e", (400,)),
        ("/photo/0%2f..%2f..%2fetc%2fpasswd", (404,)),
        ("/photo/30", (404,)),  # one past the last item
        ("/photo/99999999999999999999", (400,)),
        ("/photo/-1", (400,)),
        ("/photo/1.5", (400,)),
        ("/photo/%D9%A3", (400,)),  # an Arabic-Indic digit three: a digit, but not an id
        ("/static/../serve/app.py", (404,)),
        ("/static/index.py", (404,)),
    ],
)
def test_serves_only_gallery_photos_by_integer_id(client, engine, path, statuses):
    response = client.get(path)
    assert response.status_code in statuses, (path, response.status_code, response.text)
    assert response.json()["error"] and b"root:" not in response.content
    assert engine.photo_requests == []


def test_refuses_other_hosts_bad_k_and_methods(client, engine):
    sketch = png(Image.new("RGB", (16, 16), "white"))
    refused = client.get("/", headers={"host": "attacker.example"})  # DNS rebinding
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
    assert refused.json() == {"error": "Host header 'attacker.example' is not served here (it serves "
                                       "['127.0.0.1', 'localhost'])"}  # fmt: skip
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    for k in ("0", "-3", "abc", "31"):
        response = client.post(f"/api/search?k={k}", content=sketch, headers={"content-type": "image/png"})
        assert response.status_code == 422, k
    assert client.get("/api/search").status_code == 405
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert engine.queries == []


def test_binds_to_loopback_unless_asked(monkeypatch, engine):
    import uvicorn

    from jsbir.serve import engine as engine_lib

    calls = []
    monkeypatch.setattr(engine_lib, "load_engine", lambda index, backend=None: engine)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    assert cli.main(["--index", "somewhere"]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8000
    assert cli.allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert cli.main(["--index", "somewhere", "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["port"] == 8123
    assert cli.allowed_hosts("0.0.0.0") == ["*"]


def test_main_dispatches_serve_and_reports_a_missing_index(tmp_path):
    missing = tmp_path / "no-index"
    done = subprocess.run(
        [sys.executable, "-m", "jsbir.main", "serve", "--index", str(missing)], capture_output=True, text=True
    )
    assert done.returncode == 2 and f"cannot load the index {missing}" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian package chromium)")
def test_draw_and_search_in_headless_chromium(engine, tmp_path):
    import uvicorn
    from playwright.sync_api import sync_playwright

    port = _free_port()
    config = uvicorn.Config(app_lib.create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                tmp_path / "profile",  # a fresh, empty --user-data-dir
                executable_path=CHROMIUM,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1180, "height": 720},
            )
            page = browser.new_page()
            elsewhere = []  # requests to anywhere but this server: refused, and there must be none
            page.route(
                lambda url: not url.startswith(f"http://127.0.0.1:{port}/"),
                lambda route: elsewhere.append(route.request.url) or route.abort(),
            )
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => document.getElementById('gallery').textContent.includes('30 photos')")
            page.uncheck("#live")
            page.fill("#width", "18")
            box = page.locator("#canvas").bounding_box()
            strokes = [[(0.2, 0.25), (0.8, 0.25), (0.8, 0.75), (0.2, 0.75), (0.2, 0.25)], [(0.35, 0.5), (0.65, 0.5)]]
            for stroke in strokes:
                page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
                page.mouse.up()
            page.click("#search")
            page.wait_for_selector("#results .tile img")
            page.wait_for_function("() => [...document.images].every((i) => i.complete && i.naturalWidth > 0)")
            shown = [int(i) for i in page.locator("#results .tile").evaluate_all("ts => ts.map(t => t.dataset.item)")]
            sketch = engine.queries[-1]
            assert sketch.shape == (384, 384, 3)
            assert 0.05 < ink(sketch) < 0.3 and ink(sketch[96:100, 100:280]) > 0.9  # the top edge of the box
            assert shown == engine.ranking(sketch)[:24]
            assert "24 results" in page.text_content("#status")
            shot = SCREENSHOT if os.environ.get("JSBIR_WRITE_SCREENSHOT") == "1" else tmp_path / "serve.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000  # a real picture of the page

            page.click("#undo")  # the middle line goes; live search is off, so nothing is sent
            page.click("#eraser")
            assert page.get_attribute("#eraser", "aria-pressed") == "true"
            page.click("#clear")
            assert page.locator("#results .tile").count() == 0

            upload = tmp_path / "upload.png"
            Image.new("RGB", (200, 200), "black").save(upload)  # all ink: the fullest photos come first
            before = len(engine.queries)
            page.set_input_files("#upload", str(upload))
            page.wait_for_function("() => document.querySelectorAll('#results .tile').length === 24")
            assert len(engine.queries) == before + 1 and ink(engine.queries[-1]) == 1.0
            shown = [int(i) for i in page.locator("#results .tile").evaluate_all("ts => ts.map(t => t.dataset.item)")]
            assert shown == engine.ranking(engine.queries[-1])[:24]
            assert elsewhere == []
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
