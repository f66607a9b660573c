"""The shipped nginx configuration: rendered for N nodes, accepted by nginx, limits matching the app's."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from deploy.render_nginx import main, render
from tests.conftest import require


def test_rendered_config_lists_every_node_and_accepts_the_bodies_the_app_accepts(app):
    text = render(["10.0.0.1:8001", "10.0.0.1:8002", "10.0.0.2:8001"], "80", "/var/lib/huizhen-nginx",
                  max_upload_bytes=app.config["MAX_UPLOAD_BYTES"],
                  socket_max_payload_bytes=app.config["SOCKET_MAX_PAYLOAD_BYTES"])
    assert re.findall(r"server (\S+) max_fails", text) == ["10.0.0.1:8001", "10.0.0.1:8002", "10.0.0.2:8001"]
    assert f"client_max_body_size {app.config['MAX_CONTENT_LENGTH']};" in text
    assert "hash $binary_remote_addr consistent;" in text  # sticky sessions for the polling fallback
    assert "{{" not in text
    # nginx drops the server block's proxy_set_header in a location that sets its own: the socket
    # location must still pass the client's address, scheme and host, with the WebSocket upgrade.
    socket_location = text[text.index("location /socket.io/"):].split("}", 1)[0]
    for header in ("Host $http_host", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme",
                   "Upgrade $http_upgrade", "Connection $connection_upgrade"):
        assert f"proxy_set_header {header};" in socket_location, header
    assert f"client_max_body_size {app.config['SOCKET_MAX_PAYLOAD_BYTES']};" in socket_location


def test_render_refuses_an_empty_node_list():
    with pytest.raises(ValueError):
        render([], "80", "/tmp/x")


def test_rendered_config_passes_nginx_syntax_check(tmp_path, capsys):
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if shutil.which("/usr/sbin/nginx") else None)
    require(binary is not None, "nginx is not installed (apt-get install nginx-light)")
    assert main(["--nodes", "127.0.0.1:8001,127.0.0.1:8002", "--listen", "127.0.0.1:8080",
                 "--prefix", str(tmp_path)]) == 0
    conf = tmp_path / "nginx.conf"
    conf.write_text(capsys.readouterr().out)
    (tmp_path / "temp").mkdir()
    done = subprocess.run([binary, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
