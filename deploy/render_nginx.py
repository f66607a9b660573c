"""Render deploy/nginx.conf.template for a set of Huizhen nodes.

    python -m deploy.render_nginx --listen 80 --nodes 127.0.0.1:8001,127.0.0.1:8002 \\
        --prefix /var/lib/huizhen-nginx > /etc/huizhen/nginx.conf

client_max_body_size follows MAX_UPLOAD_BYTES (environment or config.py default) plus the form
overhead the application allows, so nginx never refuses an upload the application would accept;
on /socket.io/ it is SOCKET_MAX_PAYLOAD_BYTES, so an oversized long-polling POST is refused by nginx.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
FORM_OVERHEAD_BYTES = 1024 * 1024  # as create_app(): MAX_CONTENT_LENGTH = MAX_UPLOAD_BYTES + 1 MB


def max_body_bytes(max_upload_bytes: int | None = None) -> int:
    """The largest request body the application accepts (its MAX_CONTENT_LENGTH)."""
    if max_upload_bytes is None:
        max_upload_bytes = int(os.environ.get("MAX_UPLOAD_BYTES", 15 * 1024 * 1024))
    return max_upload_bytes + FORM_OVERHEAD_BYTES


def socket_max_body_bytes(socket_max_payload_bytes: int | None = None) -> int:
    """The largest Socket.IO long-polling body the nodes accept (their SOCKET_MAX_PAYLOAD_BYTES)."""
    if socket_max_payload_bytes is None:
        socket_max_payload_bytes = int(os.environ.get("SOCKET_MAX_PAYLOAD_BYTES", 256 * 1024))
    return socket_max_payload_bytes


def render(nodes: list[str], listen: str, prefix: Path | str, *, max_upload_bytes: int | None = None,
           socket_max_payload_bytes: int | None = None, max_fails: int = 1, fail_timeout: int = 5) -> str:
    """The nginx configuration for these node addresses (host:port), listening on `listen`."""
    if not nodes:
        raise ValueError("at least one node address is needed")
    prefix = Path(prefix)
    servers = "\n".join(f"        server {node} max_fails={max_fails} fail_timeout={fail_timeout}s;" for node in nodes)
    values = {
        "pid_file": str(prefix / "nginx.pid"),
        "error_log": str(prefix / "error.log"),
        "access_log": str(prefix / "access.log"),
        "temp_dir": str(prefix / "temp"),
        "client_max_body_size": str(max_body_bytes(max_upload_bytes)),
        "socket_max_body_size": str(socket_max_body_bytes(socket_max_payload_bytes)),
        "upstream_servers": servers,
        "listen": listen,
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ValueError("the template has a placeholder render() does not fill")
    return text


def main(argv: list[str] | None = None) -> int:
    """Print the rendered configuration."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", required=True, help="comma-separated host:port of each gunicorn node")
    ap.add_argument("--listen", default="80", help="nginx's listen directive (default 80)")
    ap.add_argument("--prefix", default="/var/lib/huizhen-nginx", help="directory for pid, logs and temp files")
    ap.add_argument("--max-upload-bytes", type=int, default=None, help="the nodes' MAX_UPLOAD_BYTES")
    ap.add_argument("--socket-max-payload-bytes", type=int, default=None, help="the nodes' SOCKET_MAX_PAYLOAD_BYTES")
    args = ap.parse_args(argv)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    sys.stdout.write(render(nodes, args.listen, args.prefix, max_upload_bytes=args.max_upload_bytes,
                            socket_max_payload_bytes=args.socket_max_payload_bytes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
