"""The draw-and-search web app: one page, its two static files, a JSON search API and the gallery's photos.

Routes:
  ``GET /``: the page. ``GET /static/{name}``: its script and style sheet, from a fixed list held in memory.
  ``GET /api/info``: the gallery's size, class names and the server's limits.
  ``POST /api/search?k=K``: the body is a sketch image (PNG, JPEG, WebP, GIF or BMP, named by Content-Type);
  the answer is ``{"results": [{"item", "score", "label", "name", "url"}], "took_ms"}``.
  ``GET /photo/{item}``: gallery photo ``item`` (an integer id), the only route that reads a file, whose path
  comes from the index, never from the request.

Errors are ``{"error": message}`` with the status that fits (see :mod:`jsbir.serve.limits`). Host headers other
than the bound address are refused (a page on another site cannot reach the server by DNS rebinding).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jsbir.serve import limits

LOCAL_HOSTS = ("127.0.0.1", "localhost")
STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
PHOTO_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp"}  # fmt: skip
MAX_K = 200
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'"),
]


class SearchEngine(Protocol):
    """What the app needs of a search engine (:class:`jsbir.serve.engine.Engine` is the real one)."""

    num_items: int
    class_names: Sequence[str]

    def search(self, image: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` best gallery items for an (H, W, 3) uint8 sketch, best first, each a dict with ``item``
        (int), ``score`` (float), ``label`` (int) and ``name`` (str)."""

    def photo_path(self, item: int) -> Path:
        """The image file of gallery item ``item`` (already checked to be in range)."""


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class TrustedHosts:
    """ASGI middleware refusing a request whose Host header (its port aside) is not one of ``allowed_hosts``
    (``"*"``: any), with a JSON error like every other refusal.

    Args:
      app: the app behind it.
      allowed_hosts: the Host values accepted.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]):
        self.app = app
        self.allowed = set(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            host = Headers(scope=scope).get("host", "")
            if host.startswith("["):  # an IPv6 address: [::1]:8000
                name = host[1:].split("]", 1)[0]
            else:
                name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            if name not in self.allowed:
                await _error(400, f"Host header {host!r} is not served here (it serves {sorted(self.allowed)})")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


def create_app(
    engine: SearchEngine,
    *,
    k: int = 24,
    max_upload_bytes: int = limits.MAX_UPLOAD_BYTES,
    max_side: int = limits.MAX_SIDE,
    body_timeout_s: float = limits.BODY_TIMEOUT_S,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
) -> Starlette:
    """The app serving ``engine``.

    Args:
      engine: the loaded index and model (or a stand-in with the same interface).
      k: how many results a search returns when it does not say.
      max_upload_bytes: the largest sketch body accepted.
      max_side: the largest sketch width or height accepted.
      body_timeout_s: how long a sketch body may take to arrive.
      allowed_hosts: Host header values accepted (``"*"`` for any).

    Returns:
      The Starlette app.
    """
    static = resources.files("jsbir.serve") / "static"
    page = (static / "index.html").read_text("utf-8")
    files = {name: (static / name).read_bytes() for name in STATIC_TYPES}
    most = min(MAX_K, engine.num_items)
    # One search at a time: decoding and embedding are CPU-bound, and queued requests then hold only their
    # bounded bodies, never a decoded image each.
    busy = asyncio.Lock()

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return _error(404, f"no static file {name[:40]!r}")
        return Response(files[name], media_type=STATIC_TYPES[name], headers={"cache-control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse({"items": engine.num_items, "classes": list(engine.class_names), "k": min(k, most),
                             "max_k": most, "max_upload_bytes": max_upload_bytes, "max_side": max_side})  # fmt: skip

    def decode_and_search(body: bytes, content_type: str, count: int) -> list[dict[str, Any]]:
        image = limits.decode_sketch(body, content_type, max_side)
        return engine.search(image, count)

    async def search(request: Request) -> Response:
        try:
            count = limits.parse_k(request.query_params.get("k"), k, most)
            limits.check_declared_length(request.headers.get("content-length"), max_upload_bytes)
            content_type = limits.check_image_type(request.headers.get("content-type"))
            body = await limits.read_limited(request.stream(), max_upload_bytes, body_timeout_s)
            async with busy:
                start = time.perf_counter()
                found = await run_in_threadpool(decode_and_search, body, content_type, count)
                took_ms = (time.perf_counter() - start) * 1000
        except limits.RequestError as e:
            return _error(e.status, e.message)
        results = [
            {"item": int(r["item"]), "score": float(r["score"]), "label": int(r["label"]), "name": str(r["name"]),
             "url": f"/photo/{int(r['item'])}"}
            for r in found
        ]  # fmt: skip
        return JSONResponse({"results": results, "took_ms": round(took_ms, 1)})

    async def photo(request: Request) -> Response:
        try:
            item = limits.parse_item(request.path_params["item"], engine.num_items)
        except limits.RequestError as e:
            return _error(e.status, e.message)
        path = Path(engine.photo_path(item))
        media_type = PHOTO_TYPES.get(path.suffix.lower())
        if media_type is None or not path.is_file():
            return _error(404, f"item {item} has no photo file the server can send")
        return FileResponse(path, media_type=media_type, headers={"cache-control": "max-age=3600"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static_file, methods=["GET"]),
        Route("/api/info", info, methods=["GET"]),
        Route("/api/search", search, methods=["POST"]),
        Route("/photo/{item}", photo, methods=["GET"]),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHosts, allowed_hosts=list(allowed_hosts))]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
