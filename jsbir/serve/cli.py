"""``python -m jsbir.main serve --index DIR [--host 127.0.0.1] [--port 8000] [--k 24]``: run the page.

Loads the index and the model it names once, then serves :func:`jsbir.serve.app.create_app` with uvicorn. The
server listens on 127.0.0.1 unless ``--host`` names another address; it then warns that anyone who can reach
that address can query the gallery and see its photos.
"""

from __future__ import annotations

import argparse
import logging
import sys

from jsbir.serve import app as app_lib
from jsbir.serve import limits

DEFAULT_HOST = "127.0.0.1"
# uvicorn refuses connections past this many (503) instead of queueing without bound.
MAX_CONNECTIONS = 32


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` subcommand's arguments."""
    parser = argparse.ArgumentParser(prog="python -m jsbir.main serve", description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="index folder written by `python -m jsbir.main index`")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--k", type=int, default=24, help="results per search (default: %(default)s)")
    parser.add_argument("--backend", default=None, help="search backend: faiss, jax or numpy (default: the index's)")
    parser.add_argument("--max-upload-kb", type=int, default=limits.MAX_UPLOAD_BYTES // 1024,
                        help="largest sketch upload in KiB (default: %(default)s)")  # fmt: skip
    return parser


def allowed_hosts(host: str) -> list[str]:
    """Host header values the app accepts when listening on ``host``: the loopback names, plus ``host`` itself,
    or any name when it listens on every address."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return sorted({*app_lib.LOCAL_HOSTS, host})


def main(argv: list[str]) -> int:
    """Runs the server until interrupted.

    Args:
      argv: the arguments after ``serve``.

    Returns:
      The exit status: 0 after a clean stop, 2 for bad arguments or an index that cannot be loaded.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.k <= app_lib.MAX_K:
        parser.error(f"--k must be from 1 to {app_lib.MAX_K}")
    if args.max_upload_kb < 1:
        parser.error("--max-upload-kb must be positive")
    import uvicorn

    from jsbir.serve import engine as engine_lib

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        engine = engine_lib.load_engine(args.index, backend=args.backend)
    except (FileNotFoundError, ValueError) as e:
        print(f"jsbir serve: cannot load the index {args.index}: {e}", file=sys.stderr)
        return 2
    if args.host != DEFAULT_HOST:
        logging.warning("listening on %s: anyone who can reach it can search the gallery and see its photos", args.host)
    app = app_lib.create_app(engine, k=args.k, max_upload_bytes=args.max_upload_kb * 1024,
                             allowed_hosts=allowed_hosts(args.host))  # fmt: skip
    print(f"jsbir serve: {engine.num_items} photos; open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5,
                server_header=False, log_level="info")  # fmt: skip
    return 0
