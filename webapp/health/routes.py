"""GET /healthz: 200 when this node can serve, 503 naming the part that failed. No sign-in, no audit."""

from __future__ import annotations

from flask import Blueprint, jsonify

from . import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    ok, checks = services.health()
    return jsonify({"status": "ok" if ok else "fail", "checks": checks}), 200 if ok else 503
