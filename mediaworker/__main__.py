"""Run the media worker: python -m mediaworker [--host 127.0.0.1] [--port 5001]."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from .echo import build_app


def main(argv: list[str] | None = None) -> int:
    """Serve the worker's local API until interrupted."""
    parser = argparse.ArgumentParser(prog="mediaworker", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("MEDIA_WORKER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MEDIA_WORKER_PORT", "5001")))
    args = parser.parse_args(argv)
    token = os.environ.get("MEDIA_WORKER_TOKEN", "")
    if not token:
        print("MEDIA_WORKER_TOKEN must be set (the web app sends it with every request).", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s mediaworker %(levelname)s %(message)s")
    web.run_app(build_app(token), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
