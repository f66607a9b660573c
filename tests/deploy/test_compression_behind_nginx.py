"""The documented production setup compresses too: through the shipped nginx config, pages and
static files arrive Brotli- or gzip-encoded once, and hashed static URLs keep their year-long cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import brotli
import requests

from webapp.assets import IMMUTABLE, StaticAssets

STATIC = Path(__file__).resolve().parents[2] / "static"


def _raw(url: str, accept: str) -> tuple[requests.Response, bytes]:
    r = requests.get(url, headers={"Accept-Encoding": accept}, stream=True, timeout=20)
    return r, r.raw.read(decode_content=False)


def test_pages_and_hashed_static_files_are_compressed_once_through_nginx(cluster):
    digest = StaticAssets(str(STATIC)).get("js/room.js").digest
    raw = (STATIC / "js/room.js").read_bytes()
    url = f"{cluster.url}/static/js/room.js?v={digest}"

    r, body = _raw(url, "gzip, deflate, br")
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "br"
    assert brotli.decompress(body) == raw
    assert r.headers["Cache-Control"] == IMMUTABLE and "Set-Cookie" not in r.headers

    r, body = _raw(url, "gzip")
    assert r.headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == raw

    r, body = _raw(f"{cluster.url}/login", "gzip, br")
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "br"
    assert b"<form" in brotli.decompress(body) and "no-store" in r.headers["Cache-Control"]
    r, body = _raw(f"{cluster.url}/login", "gzip")
    assert r.headers["Content-Encoding"] == "gzip" and b"<form" in gzip.decompress(body)
