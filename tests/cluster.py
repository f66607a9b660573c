"""A multi-node Huizhen on loopback for tests: PostgreSQL, Redis, two gunicorn/gevent nodes, nginx.

Everything is the test's own, under one temp directory and on free loopback ports: a throwaway
PostgreSQL cluster (initdb + pg_ctl, never the machine's main server), a redis-server, two
production nodes (`gunicorn --worker-class gevent --workers 1 wsgi:app`, HUIZHEN_ENV=production,
schema built by `flask db upgrade`) and nginx in front running the shipped configuration
(deploy/nginx.conf.template, rendered by deploy.render_nginx). Faults are injected through
`kill9(i)`, `restart(i)`, `stop_redis()`/`start_redis()` and `stop_postgres()`/`start_postgres()`.
`close()` stops every process and removes the directory; the `cluster` fixture in tests/conftest.py
calls it even when start-up or the test fails. See docs/testing.md.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import http.client
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from deploy.render_nginx import render as render_nginx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program (initdb, pg_ctl): on PATH or in Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(re.search(r"/(\d+)/bin/", p).group(1)))  # type: ignore[union-attr]
    return candidates[-1] if candidates else None


def missing_components() -> list[str]:
    """What this machine lacks to run the harness (empty when it can)."""
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx (apt-get install nginx-light)")
    if not (pg_bin("initdb") and pg_bin("pg_ctl")):
        missing.append("PostgreSQL server binaries initdb/pg_ctl (apt-get install postgresql)")
    if not shutil.which("redis-server"):
        missing.append("redis-server (apt-get install redis-server)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user to run initdb as (we are root)")
    return missing


def _wait(predicate, what: str, timeout: float = START_TIMEOUT, proc: subprocess.Popen | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}\n{tail}")
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _stop_group(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal a process started with start_new_session=True and everything it spawned; wait for it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Postgres:
    """A throwaway PostgreSQL cluster in a directory of its own, on 127.0.0.1 with trust auth."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.database = "huizhen"
        self._as_postgres = os.geteuid() == 0  # initdb and postgres refuse to run as root
        root.mkdir(mode=0o700)
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def url(self, database: str | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database or self.database}"

    def init(self) -> None:
        self._run(pg_bin("initdb") or "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.start()
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", str(int(START_TIMEOUT)), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: clients are disconnected; immediate: like a crash)."""
        self._run(pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            try:
                self.stop("immediate")
            except Exception:
                with contextlib.suppress(Exception):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


class Redis:
    """A redis-server of the test's own: no persistence, one loopback port kept across restarts."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.log = root / "redis.log"
        self.proc: subprocess.Popen | None = None
        root.mkdir()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        _wait(client.ping, f"redis-server on port {self.port}", proc=self.proc, log=self.log)
        client.close()

    def stop(self) -> None:
        _stop_group(self.proc, signal.SIGKILL)  # an outage, not a clean shutdown
        self.proc = None


class Node:
    """One production Huizhen process: gunicorn with one gevent worker on a loopback port."""

    def __init__(self, index: int, root: Path, port: int, env: Mapping[str, str], app: str = "wsgi:app") -> None:
        self.index = index
        self.app = app  # the WSGI application gunicorn serves (bench/chat_bench.py swaps in its bare relay)
        self.port = port
        self.env = dict(env)
        self.log = root / f"node{index}.log"
        self.control_socket = root / f"node{index}.ctl"  # gunicorn's default path is one per user
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gevent", "--workers", "1",
               "--worker-connections", "1000", "--bind", f"127.0.0.1:{self.port}", "--graceful-timeout", "3",
               "--timeout", "60", "--control-socket", str(self.control_socket), self.app]
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self) -> None:
        # Up means answering HTTP at all: /healthz may well be 503 while a fault is injected.
        _wait(lambda: requests.get(f"{self.url}/healthz", timeout=5).status_code in (200, 503),
              f"node {self.index} on port {self.port}", proc=self.proc, log=self.log)

    def kill9(self) -> None:
        _stop_group(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop_group(self.proc, signal.SIGTERM)


class Nginx:
    """nginx running the shipped configuration, rendered for this cluster's ports and directory."""

    def __init__(self, root: Path, port: int, nodes: list[Node]) -> None:
        self.root = root
        self.port = port
        self.proc: subprocess.Popen | None = None
        root.mkdir()
        (root / "temp").mkdir()
        self.conf = root / "nginx.conf"
        self.conf.write_text(render_nginx([f"127.0.0.1:{n.port}" for n in nodes], f"127.0.0.1:{port}", root))
        self.access_log = root / "access.log"
        self.error_log = root / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.root), "-c", str(self.conf), "-e", str(self.error_log), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: requests.get(f"{self.url}/login", timeout=5).status_code == 200,
              f"nginx on port {self.port}", proc=self.proc, log=self.error_log)

    def stop(self) -> None:
        _stop_group(self.proc, signal.SIGQUIT)  # graceful: workers finish, then the master exits


class Cluster:
    """Two Huizhen nodes behind nginx, sharing a PostgreSQL and a Redis of their own."""

    def __init__(self, nodes: int = 2, env: Mapping[str, str] | None = None, app: str = "wsgi:app") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="huizhen-cluster-"))
        self.root.chmod(0o755)  # nginx workers (nobody) and postgres must reach their directories
        self.postgres = Postgres(self.root / "pg", _free_port())
        self.redis = Redis(self.root / "redis", _free_port())
        nginx_port = _free_port()
        ports = [_free_port() for _ in range(nodes)]
        self.env = self._node_env(ports, nginx_port, env or {})
        self.nodes = [Node(i, self.root, port, self.env, app) for i, port in enumerate(ports)]
        self.nginx = Nginx(self.root / "nginx", nginx_port, self.nodes)
        self._closed = False
        atexit.register(self.close)  # a belt to the fixture's braces: nothing outlives the run

    def _node_env(self, ports: list[int], nginx_port: int, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HUIZHEN_", "FLASK_", "REDIS_", "RATELIMIT_", "DATABASE_", "TEST_"))}
        origins = [f"http://127.0.0.1:{p}" for p in [nginx_port, *ports]]
        env.update({
            "HUIZHEN_ENV": "production",
            "FLASK_APP": "wsgi.py",
            "SECRET_KEY": secrets.token_urlsafe(48),  # one key: a session cookie is valid on every node
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url,
            "ALLOWED_ORIGINS": ",".join(origins),
            "SESSION_COOKIE_SECURE": "0",  # plain http on loopback
            "PROXY_FIX_HOPS": "1",  # nginx sets X-Forwarded-For
            "LOGIN_RATE_LIMIT": "100000 per minute",  # every test user signs in from 127.0.0.1
            "UPLOAD_DIR": str(self.root / "uploads"),  # shared by the nodes, as a shared volume would be
            "HEALTH_TIMEOUT_SECONDS": "2",
            "ROOM_OPENS_MINUTES_BEFORE": "1440",  # test worlds book the next free slot
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> Cluster:
        try:
            self.postgres.init()
            self.redis.start()
            # The schema is built while the nodes boot (importing the app is most of the start-up
            # time; booting touches no table); nginx starts once both are done.
            migrate = subprocess.Popen([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=self.env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       start_new_session=True)
            try:
                for node in self.nodes:
                    node.spawn()
                output, _ = migrate.communicate(timeout=180)
            finally:
                _stop_group(migrate, signal.SIGKILL)  # only if it is still running (start-up failed)
            if migrate.returncode != 0:
                raise RuntimeError(f"flask db upgrade failed: {output}")
            for node in self.nodes:
                node.wait_ready()
            self.nginx.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process and remove the directory (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        for stop in (self.nginx.stop, *(n.kill9 for n in self.nodes), self.redis.stop, self.postgres.destroy):
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # --- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """nginx, as browsers reach the cluster."""
        return self.nginx.url

    def node_url(self, i: int) -> str:
        """One node directly, bypassing nginx."""
        return self.nodes[i].url

    @property
    def database_url(self) -> str:
        return self.postgres.url()

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def node_behind_nginx(self, source: str = "127.0.0.1") -> int:
        """The node nginx sends requests from this loopback address to (sticky by client address)."""
        marker = f"/login?probe={secrets.token_hex(6)}"
        conn = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=10, source_address=(source, 0))
        try:
            conn.request("GET", marker)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"nginx answered the probe with {response.status}")
        found: list[str] = []

        def logged() -> bool:  # nginx writes the line just after sending the response
            found.extend(line for line in self.nginx.access_log.read_text().splitlines() if marker in line)
            return bool(found)

        _wait(logged, "nginx to log the probe request", timeout=10)
        upstream = re.search(r"upstream=(\S+)", found[-1]).group(1).split(",")[-1].strip()  # type: ignore[union-attr]
        return next(n.index for n in self.nodes if upstream == f"127.0.0.1:{n.port}")

    # --- faults -----------------------------------------------------------------------------

    def kill9(self, i: int) -> None:
        """SIGKILL node i (gunicorn's master and worker): no shutdown, connections cut."""
        self.nodes[i].kill9()

    def restart(self, i: int) -> None:
        """Start node i again on the same port (stopping it first if it still runs)."""
        self.nodes[i].stop()
        self.nodes[i].start()

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis.start()

    def stop_postgres(self, mode: str = "fast") -> None:
        self.postgres.stop(mode)

    def start_postgres(self) -> None:
        self.postgres.start()

    def wait_healthy(self, timeout: float = 30) -> None:
        """Wait until every node's /healthz says 200 (after a fault has been undone)."""
        for node in self.nodes:
            _wait(lambda node=node: requests.get(f"{node.url}/healthz", timeout=10).status_code == 200,
                  f"node {node.index} healthy", timeout=timeout, proc=node.proc, log=node.log)

    def logs(self) -> str:
        """The tail of every node's log, for assertion messages."""
        return "\n".join(f"--- node {n.index}\n{n.log.read_text(errors='replace')[-2000:]}"
                         for n in self.nodes if n.log.exists())
