"""Static files for slow links: content-hashed URLs cached for a year, precompressed (Brotli, gzip).

``static_url('js/room.js')`` gives ``/static/js/room.js?v=<hash of the content>``. A request that
carries the file's current hash is answered ``Cache-Control: public, max-age=31536000, immutable``
(a returning visit makes no request at all); any other (the bare URL, an old hash) gets a short
cache and still works. The hash and the compressed bodies are computed once per process and file,
again only if the file changes on disk. Pages themselves stay ``no-store`` and are compressed by
Flask-Compress (webapp/__init__.py), which leaves these already-encoded responses alone.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import os
import threading
from dataclasses import dataclass, field

import brotli
from flask import Flask, Response, abort, current_app, request, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.security import safe_join

IMMUTABLE = "public, max-age=31536000, immutable"
COMPRESSIBLE = {"text/css", "text/javascript", "application/javascript", "image/svg+xml",
                "application/json", "text/plain"}
MAX_IN_MEMORY = 2 * 1024 * 1024  # larger files are sent from disk, uncompressed


@dataclass
class Asset:
    """One static file as read at (mtime, size): its content hash and encoded bodies."""

    stamp: tuple[int, int]
    digest: str
    mimetype: str
    bodies: dict[str, bytes] = field(default_factory=dict)  # "identity", "br", "gzip"


class StaticAssets:
    """The per-process cache of hashed, precompressed static files of one app."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._assets: dict[str, Asset] = {}
        self._lock = threading.Lock()

    def get(self, filename: str) -> Asset | None:
        """The file's cached asset (built or rebuilt on first use and on change), None if absent."""
        path = safe_join(self.folder, filename)
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not os.path.isfile(path):
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        asset = self._assets.get(filename)
        if asset is not None and asset.stamp == stamp:
            return asset
        with self._lock:
            asset = self._assets.get(filename)
            if asset is None or asset.stamp != stamp:
                asset = self._build(path, stamp)
                self._assets[filename] = asset
        return asset

    @staticmethod
    def _build(path: str, stamp: tuple[int, int]) -> Asset:
        mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(65536), b""):
                sha.update(chunk)
        asset = Asset(stamp=stamp, digest=sha.hexdigest()[:16], mimetype=mimetype)
        if stamp[1] <= MAX_IN_MEMORY:
            with open(path, "rb") as fh:
                data = fh.read()
            asset.bodies["identity"] = data
            if mimetype in COMPRESSIBLE and len(data) >= 512:
                asset.bodies["br"] = brotli.compress(data, quality=11)
                asset.bodies["gzip"] = gzip.compress(data, compresslevel=9, mtime=0)
        return asset


def assets_of(app: Flask) -> StaticAssets:
    """The app's static asset cache."""
    return app.extensions["huizhen_assets"]


def static_url(filename: str) -> str:
    """The content-hashed URL of a static file (the bare URL if the file does not exist)."""
    asset = assets_of(current_app).get(filename)
    if asset is None:
        return url_for("static", filename=filename)
    return url_for("static", filename=filename, v=asset.digest)


def _accepted(encoding: str) -> bool:
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == encoding:
            q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def _serve_static(filename: str) -> Response:
    """The static view: hashed URLs cached for a year, Brotli or gzip when the browser accepts it."""
    app = current_app
    asset = assets_of(app).get(filename)
    if asset is None:
        abort(404)
    current = request.args.get("v") == asset.digest
    cache_control = IMMUTABLE if current else f"public, max-age={app.config['STATIC_SHORT_MAX_AGE']}"
    if "identity" not in asset.bodies:  # too large to keep: from disk, as Flask would
        response = app.send_static_file(filename)
        response.headers["Cache-Control"] = cache_control
        return response
    encoding = next((e for e in ("br", "gzip") if e in asset.bodies and _accepted(e)), "identity")
    response = Response(asset.bodies[encoding], mimetype=asset.mimetype)
    if encoding != "identity":
        response.headers["Content-Encoding"] = encoding
    if len(asset.bodies) > 1:
        response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = cache_control
    response.set_etag(asset.digest if encoding == "identity" else f"{asset.digest}-{encoding}")
    return response.make_conditional(request)


class StaticFreeSessionInterface(SecureCookieSessionInterface):
    """Static responses neither vary on nor refresh the session cookie: a ``Vary: Cookie`` (the
    session is touched by Flask-Login on every response) makes browsers revalidate the file as soon
    as the cookie changes, and a ``Set-Cookie`` keeps shared caches from storing it."""

    def save_session(self, app: Flask, session, response: Response) -> None:
        if request.endpoint == "static":
            return
        super().save_session(app, session, response)


def init_assets(app: Flask) -> None:
    """Serve /static/ through the hashed, precompressed cache and give templates ``static_url``."""
    app.extensions["huizhen_assets"] = StaticAssets(str(app.static_folder))
    app.view_functions["static"] = _serve_static
    app.add_template_global(static_url, "static_url")
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = StaticFreeSessionInterface()
