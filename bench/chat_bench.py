"""Consult-room chat benchmark: Huizhen's authenticated, persisted path next to a bare relay.

    .venv/bin/python -m bench.chat_bench --rooms 500 --rate 1 --duration 30 --db postgresql

Prepares a fresh database (migrations, then N scheduled consults with distinct rural doctor /
specialist pairs created through the services), launches Huizhen as a subprocess in each server
mode, signs every participant in through the login form, drives 2 python-socketio clients per room
sending at a fixed rate, then does the same against ``bench.bare_relay`` served the same way.
Prints one table (and writes JSON with --json). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "bench-password-123"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"
FAST_HASH_APP = "webapp:create_app(overrides={'ARGON2_FAST': True})"


# --- the database ---------------------------------------------------------------------------------


def database_url(kind: str, workdir: Path, name: str) -> str:
    if kind == "postgresql":
        return f"{PG_BASE}/{name}"
    return f"sqlite:///{workdir / (name + '.db')}"


def fresh_database(url: str) -> None:
    """Drop and create the benchmark database."""
    if not url.startswith("postgresql"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    from sqlalchemy import create_engine, text

    base, name = url.rsplit("/", 1)
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def prepare(url: str, rooms: int, fresh: bool = True) -> list[tuple[int, str, tuple[str, str]]]:
    """Migrate a fresh database (or the cluster's, already migrated) and create one scheduled consult per room."""
    from flask_migrate import upgrade

    from config import DevelopmentConfig
    from webapp import create_app
    from webapp.auth.services import Registration, create_user
    from webapp.consults import services as consults
    from webapp.extensions import db
    from webapp.models import AccountStatus, Facility, FacilityLevel, Partnership, Role, Sex, Urgency, User
    from webapp.scheduling import services as scheduling

    if fresh:
        fresh_database(url)
    overrides: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": url, "ARGON2_FAST": True,
                                 "SECRET_KEY": secrets.token_urlsafe(48)}
    if url.startswith("postgresql"):  # setup only: no fsync wait per commit while building the world
        overrides["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"options": "-c synchronous_commit=off"}}
    app = create_app(DevelopmentConfig, overrides)
    made = []
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        county = Facility(name="Bench County Hospital", level=FacilityLevel.COUNTY_HOSPITAL, region="Gansu")
        regional = Facility(name="Bench Regional Centre", level=FacilityLevel.REGIONAL_MEDICAL_CENTRE,
                            region="Gansu")
        db.session.add_all([county, regional])
        db.session.flush()
        db.session.add(Partnership(facility_id=county.id, partner_id=regional.id))
        db.session.commit()
        windows = [scheduling.Window(day, 0, 24 * 60) for day in range(7)]

        def person(email: str, role: Role, facility: Facility, n: int) -> User:
            return create_user(Registration(
                email=email, password=PASSWORD, full_name=f"{role.label} {n}", role=role,
                facility_id=facility.id, licence_number=f"BENCH{n:06d}", timezone="Asia/Shanghai",
                languages=("zh-CN",), specialty="cardiology" if role == Role.SPECIALIST else None,
            ), status=AccountStatus.APPROVED)

        for i in range(rooms):
            rural = person(f"rural{i}@bench.test", Role.RURAL_DOCTOR, county, i)
            specialist = person(f"specialist{i}@bench.test", Role.SPECIALIST, regional, i)
            db.session.commit()
            scheduling.set_availability(specialist, windows)
            consult = consults.create_draft(rural, consults.CaseData(
                specialty="cardiology", urgency=Urgency.ROUTINE, patient_age_years=50 + i % 40,
                patient_sex=Sex.FEMALE if i % 2 else Sex.MALE, chief_complaint="Palpitations",
                history="Two months of intermittent palpitations.", findings="ECG: sinus rhythm.",
                question="Holter monitoring or referral?",
            ))
            consults.submit(rural, consult.ref)
            consults.accept(specialist, consult.ref, scheduling.open_slots(specialist, days=2)[0].starts_at)
            # Matching offers a request to every approved specialist of the specialty; park the ones
            # already paired so each submit offers to one specialist (N offers, not N^2 / 2).
            specialist.status = AccountStatus.SUSPENDED
            db.session.commit()
            made.append((i, consult.ref, (rural.email, specialist.email)))
        db.session.execute(db.update(User).where(User.role == Role.SPECIALIST)
                           .values(status=AccountStatus.APPROVED))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return made


# --- servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    mode: str
    kind: str  # huizhen | bare
    port: int
    proc: subprocess.Popen
    log: Path
    extra_pids: tuple[int, ...] = ()  # the other nodes of a cluster, for CPU accounting

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *self.extra_pids]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_command(mode: str, kind: str, port: int, worker_connections: int, workers: int = 1) -> list[str]:
    app = FAST_HASH_APP if kind == "huizhen" else "bench.bare_relay:app"
    if mode == "gevent":  # several workers share the port; websocket-only clients need no stickiness
        return [str(BIN / "gunicorn"), "--worker-class", "gevent", "--workers", str(workers),
                "--worker-connections", str(worker_connections), "--bind", f"127.0.0.1:{port}", app]
    if mode == "gthread":  # threading async mode: every WebSocket holds one thread for its lifetime
        return [str(BIN / "gunicorn"), "--worker-class", "gthread", "--workers", "1",
                "--threads", str(worker_connections), "--bind", f"127.0.0.1:{port}", app]
    if mode == "werkzeug":
        return [str(BIN / "flask"), "--app", app, "run", "--host", "127.0.0.1", "--port", str(port),
                "--with-threads", "--no-reload", "--no-debugger"]
    raise SystemExit(f"unknown server mode {mode!r}")


def server_env(mode: str, port: int, db_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUIZHEN_", "FLASK_", "REDIS_", "RATELIMIT_"))}
    env.update({
        # gunicorn runs the production config; `flask run` is refused in production, so it runs development.
        "HUIZHEN_ENV": "development" if mode == "werkzeug" else "production",
        "SOCKETIO_ASYNC_MODE": "gevent" if mode == "gevent" else "threading",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": db_url,
        "ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
        "SESSION_COOKIE_SECURE": "0",  # plain http on loopback
        "LOGIN_RATE_LIMIT": "100000 per minute",  # every participant signs in from 127.0.0.1
        "ROOM_OPENS_MINUTES_BEFORE": "1440",  # the bench world books the next free slots: rooms open now
        "PYTHONUNBUFFERED": "1",
    })
    if db_url.startswith("sqlite"):
        env["HUIZHEN_ALLOW_SQLITE"] = "1"
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def start_server(mode: str, kind: str, port: int, db_url: str, redis_url: str, workdir: Path,
                 worker_connections: int, workers: int = 1) -> Server:
    log = workdir / f"{mode}-{kind}.log"
    proc = subprocess.Popen(server_command(mode, kind, port, worker_connections, workers), cwd=ROOT,
                            env=server_env(mode, port, db_url, redis_url), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(mode, kind, port, proc, log)
    probe = f"{server.url}/login" if kind == "huizhen" else f"{server.url}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{mode}/{kind} server exited; see {log}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(probe, timeout=2) as r:
            if r.status == 200:
                return server
        time.sleep(0.3)
    stop_server(server)
    raise SystemExit(f"{mode}/{kind} server did not answer in 60 s; see {log}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


# --- CPU accounting -------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, user+system CPU seconds) of one process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu(root_pids: list[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stats[int(entry)] = _proc_stat(int(entry))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, list(root_pids)
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def pg_sessions(db_url: str) -> int | None:
    """Sessions (connections) PostgreSQL has opened on the benchmark database so far."""
    if not db_url.startswith("postgresql"):
        return None
    import psycopg

    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
    return pids


# --- running a load -------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def split(items: list, n: int) -> list[list]:
    return [items[i::n] for i in range(n)]


def rate_label(rate: float | tuple[float, float]) -> str:
    return f"{rate[0]:g}-{rate[1]:g}" if isinstance(rate, tuple) else f"{rate:g}"


def run_load(server: Server, rooms: list, rates: list[float | tuple[float, float]], duration: float, drain: float,
             procs: int, password: str, db_url: str, profile_dir: Path | None = None, first: bool = False,
             local_addrs: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Drive 2 clients per room through each rate step; a (low, high) rate gives each client its own rate.

    With `first`, every room's first message is sent and acknowledged before the first step."""
    from . import loadgen

    ctx = multiprocessing.get_context("spawn")
    workers = []
    for part in split(rooms, procs):
        parent, child = ctx.Pipe()
        cfg = {"url": server.url, "origin": server.url, "rooms": part, "login": server.kind == "huizhen",
               "password": password, "local_addrs": local_addrs or {}}
        proc = ctx.Process(target=loadgen.worker, args=(child, cfg), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        setup_s = 0.0
        for _proc, conn in workers:
            status, info = conn.recv()
            if status != "ready":
                raise SystemExit(f"load generator failed against {server.mode}/{server.kind}: {info}\n"
                                 f"server log: {server.log}")
            setup_s = max(setup_s, info["setup_s"])
        print(f"  {server.mode}/{server.kind}: {2 * len(rooms)} participants signed in, connected and joined "
              f"in {setup_s:.1f} s", flush=True)
        results = []
        run_tag = secrets.token_hex(3)  # client ids never repeat across runs on the same database
        if first:
            for _, conn in workers:
                conn.send(("first", {"step": run_tag}))
            firsts = [conn.recv()[1] for _, conn in workers]
            print(f"  {server.mode}/{server.kind}: first message of {sum(f['ok'] for f in firsts)}/"
                  f"{sum(f['rooms'] for f in firsts)} rooms acknowledged in "
                  f"{max(f['seconds'] for f in firsts):.1f} s", flush=True)
        for n, rate in enumerate(rates):
            t0 = time.time() + 1.5
            for _, conn in workers:
                step = {"step": f"{run_tag}s{n}", "rate": rate, "duration": duration, "t0_wall": t0,
                        "drain": drain}
                if isinstance(rate, tuple):
                    step.update(rate=sum(rate) / 2, rate_range=rate)
                conn.send(("step", step))
            time.sleep(max(0.0, t0 - time.time()))
            spy = None
            if profile_dir is not None:  # folded stacks of the server while it is under load
                out = profile_dir / f"{server.mode}-{server.kind}-rate{rate_label(rate)}.folded"
                spy = subprocess.Popen([str(BIN / "py-spy"), "record", "--pid", str(server.proc.pid),
                                        "--subprocesses", "--duration", str(int(duration)), "--format", "raw",
                                        "--output", str(out), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sessions0 = pg_sessions(db_url) if server.kind == "huizhen" else None
            cpu0 = (tree_cpu(server.pids), tree_cpu([p.pid for p, _ in workers]),
                    tree_cpu(postgres_pids()), machine_busy())
            time.sleep(duration)
            cpu1 = (tree_cpu(server.pids), tree_cpu([p.pid for p, _ in workers]),
                    tree_cpu(postgres_pids()), machine_busy())
            sessions1 = pg_sessions(db_url) if server.kind == "huizhen" else None
            parts = [conn.recv()[1] for _, conn in workers]
            if spy is not None:
                spy.wait(timeout=60)
            merged: dict[str, Any] = {"mode": server.mode, "server": server.kind, "rooms": len(rooms),
                                      "participants": 2 * len(rooms), "rate": rate, "duration": duration}
            for key in ("sent", "delivered", "acks", "duplicates", "echoes", "connected"):
                merged[key] = sum(p[key] for p in parts)
            errors: dict[str, int] = {}
            for p in parts:
                for k, v in p["ack_errors"].items():
                    errors[k] = errors.get(k, 0) + v
            lat = [x for p in parts for x in p["latencies_ms"]]
            ack = [x for p in parts for x in p["ack_ms"]]
            lag = [x for p in parts for x in p["send_lag_ms"]]
            busy = (cpu1[3][0] - cpu0[3][0]) / max(1, cpu1[3][1] - cpu0[3][1])
            merged.update({
                "lost": merged["sent"] - merged["delivered"], "ack_errors": errors,
                "delivered_per_s": merged["delivered"] / duration,
                "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat, default=float("nan")),
                "ack_p50_ms": pct(ack, 50), "ack_p99_ms": pct(ack, 99),
                "send_lag_p99_ms": pct(lag, 99),
                "server_cpu_pct": 100 * (cpu1[0] - cpu0[0]) / duration,
                "loadgen_cpu_pct": 100 * (cpu1[1] - cpu0[1]) / duration,
                "postgres_cpu_pct": 100 * (cpu1[2] - cpu0[2]) / duration,
                "machine_busy_pct": 100 * busy,
                "load_avg": os.getloadavg(),
                "pg_connections_opened": None if sessions0 is None else sessions1 - sessions0,
            })
            results.append(merged)
            print("  " + row(merged), flush=True)
        return results
    finally:
        for _proc, conn in workers:
            with contextlib.suppress(Exception):
                conn.send(("stop", {}))
        for proc, _ in workers:
            proc.join(timeout=20)
            if proc.is_alive():
                proc.terminate()


# --- two nodes behind nginx with Redis: the multi-node test harness (tests/cluster.py) --------------

BARE_APP = "bench.bare_relay:app"


def pinned_addresses(cluster: Any) -> dict[str, str]:
    """Two loopback source addresses nginx sends to different nodes, so that every room spans both."""
    by_node: dict[int, str] = {}
    for last in range(2, 60):
        addr = f"127.0.0.{last}"
        by_node.setdefault(cluster.node_behind_nginx(source=addr), addr)
        if len(by_node) == 2:
            return {"a": by_node[0], "b": by_node[1]}
    raise SystemExit("nginx sent every probed loopback address to the same node")


def serve_on_cluster(cluster: Any, kind: str) -> Server:
    """Run Huizhen (fast password hashing, as on one node) or the bare relay on every node; nginx stays."""
    for i, node in enumerate(cluster.nodes):
        app = FAST_HASH_APP if kind == "huizhen" else BARE_APP
        if node.app != app or node.proc is None or node.proc.poll() is not None:
            node.app = app
            cluster.restart(i)
    first, *others = cluster.nodes
    return Server("2 nodes+nginx", kind, cluster.nginx.port, first.proc, first.log,
                  extra_pids=tuple(n.proc.pid for n in others))


def start_cluster(nodes: int = 2) -> Any:
    from tests.cluster import Cluster, missing_components

    missing = missing_components()
    if missing:
        raise SystemExit("the two-node run needs " + ", ".join(missing))
    return Cluster(nodes=nodes, env={"SOCKETIO_ASYNC_MODE": "gevent"}, app=FAST_HASH_APP).start()


# --- recovery: the time from a Redis / PostgreSQL restart to the last stored message shown ---------


def signed_in(base: str, email: str) -> Any:
    """A requests session signed in through the login form (the bench's password)."""
    from tests.conftest import http_session

    return http_session(base, email, PASSWORD)


class ResyncReader:
    """A reader running room.js's resync protocol: live `message`s, and every RESYNC_SECONDS a `head`
    check followed by `backfill` pages of anything missing. Records when each seq was first shown."""

    def __init__(self, base: str, email: str, ref: str, interval: float) -> None:
        import socketio as sio

        self.ref, self.interval = ref, interval
        self.shown: dict[int, float] = {}
        self.client = sio.Client(reconnection=True, http_session=signed_in(base, email))
        self.client.on("message", lambda m: self._show([m]), namespace="/room")
        self.client.connect(base, namespaces=["/room"], transports=["websocket"], wait_timeout=30)
        self._show(self.client.call("join", {"ref": ref, "after_seq": 0}, namespace="/room", timeout=30)["messages"])
        self.stop = False
        self.thread = threading.Thread(target=self._resync, daemon=True)
        self.thread.start()

    def _show(self, messages: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for m in messages:
            self.shown.setdefault(int(m["seq"]), now)

    def contiguous(self) -> int:
        n = 0
        while n + 1 in self.shown:
            n += 1
        return n

    def _resync(self) -> None:
        while not self.stop:
            time.sleep(self.interval)
            with contextlib.suppress(Exception):  # a failed check (database down) is tried again next time
                head = self.client.call("head", {"ref": self.ref}, namespace="/room", timeout=10)
                while head.get("ok") and head["last_seq"] > self.contiguous():
                    page = self.client.call("backfill", {"ref": self.ref, "after_seq": self.contiguous()},
                                            namespace="/room", timeout=10)
                    if not page.get("ok"):
                        break
                    self._show(page["messages"])
                    if not page["more"]:
                        break

    def close(self) -> None:
        self.stop = True
        self.client.disconnect()


class OutboxWriter:
    """A writer that sends its outbox one message at a time, retrying a failed send (as room.js does)."""

    def __init__(self, base: str, email: str, ref: str) -> None:
        import socketio as sio

        self.ref = ref
        self.outbox: list[tuple[str, str]] = []
        self.stored: list[int] = []
        self.lock = threading.Lock()
        self.client = sio.Client(reconnection=True, http_session=signed_in(base, email))
        self.client.connect(base, namespaces=["/room"], transports=["websocket"], wait_timeout=30)
        self.client.call("join", {"ref": ref, "after_seq": 0}, namespace="/room", timeout=30)
        self.stop = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def write(self, body: str) -> None:
        with self.lock:
            self.outbox.append((f"recovery-{secrets.token_hex(6)}", body))

    def _pump(self) -> None:
        while not self.stop:
            with self.lock:
                item = self.outbox[0] if self.outbox else None
            if item is None:
                time.sleep(0.05)
                continue
            try:
                ack = self.client.call("send", {"ref": self.ref, "client_id": item[0], "body": item[1]},
                                       namespace="/room", timeout=10)
            except Exception:
                ack = None
            if isinstance(ack, dict) and ack.get("ok"):
                with self.lock:
                    self.outbox.pop(0)
                    self.stored.append(int(ack["message"]["seq"]))
            else:
                time.sleep(1.0)

    def close(self) -> None:
        self.stop = True
        self.client.disconnect()


def measure_recovery(cluster: Any, room: tuple[int, str, tuple[str, str]], fault: str, outage: float,
                     interval: float) -> dict[str, Any]:
    """Writer on node 0, resync reader on node 1; `fault` stopped for `outage` s while the writer writes."""
    _, ref, (writer_email, reader_email) = room
    writer = OutboxWriter(cluster.node_url(0), writer_email, ref)
    reader = ResyncReader(cluster.node_url(1), reader_email, ref, interval)
    stop, start = {"redis": (cluster.stop_redis, cluster.start_redis),
                   "postgresql": (cluster.stop_postgres, cluster.start_postgres)}[fault]
    try:
        stop()
        began = time.monotonic()
        written = 0
        while time.monotonic() - began < outage:
            writer.write(f"written during the {fault} outage {written}")
            written += 1
            time.sleep(1.0)
        start()
        back = time.monotonic()
        deadline = back + 120
        while time.monotonic() < deadline:
            with writer.lock:
                done = not writer.outbox and all(seq in reader.shown for seq in writer.stored)
            if done:
                break
            time.sleep(0.1)
        last_seq = max(writer.stored, default=0)
        last_shown = reader.shown.get(last_seq)
        missing = [seq for seq in writer.stored if seq not in reader.shown]
        return {"fault": fault, "outage_s": outage, "written": written, "stored": len(writer.stored),
                "missing_on_reader": len(missing),
                "recovery_to_last_shown_s": None if last_shown is None else last_shown - back,
                "stored_during_outage": sum(1 for seq in writer.stored if reader.shown.get(seq, back + 1) < back),
                "resync_s": interval, "load_avg": os.getloadavg()}
    finally:
        writer.close()
        reader.close()
        cluster.wait_healthy(timeout=60)


def recovery_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| fault | outage s | written | stored | shown before recovery | missing on reader | "
             "recovery → last stored message shown, s | RESYNC_SECONDS | load avg |", "|" + "---|" * 9]
    for r in rows:
        shown = r["recovery_to_last_shown_s"]
        lines.append(f"| {r['fault']} | {r['outage_s']:g} | {r['written']} | {r['stored']} | "
                     f"{r['stored_during_outage']} | {r['missing_on_reader']} | "
                     f"{'never' if shown is None else f'{shown:.1f}'} | {r['resync_s']:g} | {r['load_avg'][0]:.1f} |")
    return "\n".join(lines)


# --- reporting ------------------------------------------------------------------------------------

COLUMNS = ("mode", "server", "rooms", "clients", "rate/s", "sent", "delivered", "lost", "msg/s",
           "p50 ms", "p99 ms", "max ms", "ack p99", "send lag p99", "srv CPU%", "gen CPU%", "pg CPU%", "load avg")


def cells(r: dict[str, Any]) -> list[str]:
    return [r["mode"], r["server"], str(r["rooms"]), str(r["participants"]), rate_label(r["rate"]), str(r["sent"]),
            str(r["delivered"]), str(r["lost"]), f"{r['delivered_per_s']:.0f}", f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}", f"{r['max_ms']:.0f}", f"{r['ack_p99_ms']:.1f}", f"{r['send_lag_p99_ms']:.1f}",
            f"{r['server_cpu_pct']:.0f}", f"{r['loadgen_cpu_pct']:.0f}", f"{r['postgres_cpu_pct']:.0f}",
            f"{r['load_avg'][0]:.1f}"]


def row(r: dict[str, Any]) -> str:
    extra = []
    if r["ack_errors"]:
        extra.append(f"ack errors {r['ack_errors']}")
    if r["duplicates"]:
        extra.append(f"duplicates {r['duplicates']}")
    if r.get("pg_connections_opened"):
        extra.append(f"{r['pg_connections_opened']} new PostgreSQL connections")
    if r["connected"] != r["participants"]:
        extra.append(f"connected {r['connected']}/{r['participants']}")
    return " | ".join(cells(r)) + ("  (" + "; ".join(extra) + ")" if extra else "")


def cpu_per_message_ms(r: dict[str, Any]) -> float:
    """Server CPU (ms of one core) per message sent in the step, the open sockets' upkeep included."""
    sent_per_s = r["sent"] / r["duration"]
    return 10 * r["server_cpu_pct"] / sent_per_s if sent_per_s else float("nan")


def goals(r: dict[str, Any], bare: dict[str, Any]) -> str:
    """Issue 15's chat goals against the bare relay of the same run: p99 <= 2x bare + 10 ms, CPU <= 1.3x."""
    p99_goal = 2 * bare["p99_ms"] + 10
    cpu, cpu_bare = cpu_per_message_ms(r), cpu_per_message_ms(bare)
    ratio = cpu / cpu_bare if cpu_bare else float("nan")
    return (f"goal p99 <= {p99_goal:.1f} ms: {r['p99_ms']:.1f} ms ({'met' if r['p99_ms'] <= p99_goal else 'not met'}); "
            f"CPU per message {cpu:.2f} vs bare {cpu_bare:.2f} ms = {ratio:.2f}x "
            f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'not met'})")


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in results]
    ratios = []
    for r in results:
        if r["server"] != "huizhen":
            continue
        bare = next((b for b in results if b["server"] == "bare" and b["mode"] == r["mode"]
                     and b["rate"] == r["rate"]), None)
        if bare and bare["delivered_per_s"]:
            ratios.append(f"{r['mode']} at {rate_label(r['rate'])} msg/s per client: Huizhen/bare delivered msg/s = "
                          f"{r['delivered_per_s']:.0f}/{bare['delivered_per_s']:.0f} = "
                          f"{r['delivered_per_s'] / bare['delivered_per_s']:.2f}; p99 {r['p99_ms']:.1f} vs "
                          f"{bare['p99_ms']:.1f} ms")
            ratios.append("    " + goals(r, bare))
    return "\n".join(lines + [""] + ratios)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("gevent", "greenlet", "gunicorn", "psycopg", "Flask", "Flask-SocketIO", "python-socketio",
                 "python-engineio", "simple-websocket", "SQLAlchemy", "aiohttp"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


PSYCOPG_GEVENT_CHECK = """
from gevent import monkey; monkey.patch_all()
import time, gevent, psycopg
def q():
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as c:
        c.execute("select pg_sleep(0.5)")
t = time.perf_counter(); gevent.joinall([gevent.spawn(q) for _ in range(10)])
print(f"{time.perf_counter() - t:.2f}")
"""


def psycopg_gevent_check() -> str:
    """Ten greenlets each running pg_sleep(0.5): ~0.5 s if psycopg yields to gevent, ~5 s if it blocks."""
    out = subprocess.run([sys.executable, "-c", PSYCOPG_GEVENT_CHECK], capture_output=True, text=True, timeout=60)
    if out.returncode:
        return f"check failed: {out.stderr.strip()[-300:]}"
    secs = float(out.stdout.strip())
    return f"10 greenlets x pg_sleep(0.5) took {secs:.2f} s ({'cooperative' if secs < 2 else 'BLOCKING'})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rooms", type=int, default=500)
    ap.add_argument("--rate", default="1", help="messages per second per participant; a comma list runs steps")
    ap.add_argument("--duration", type=float, default=30, help="seconds of sending per step")
    ap.add_argument("--drain", type=float, default=10, help="seconds to wait for late deliveries after a step")
    ap.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    ap.add_argument("--modes", default="gevent", help="comma list of gevent (gunicorn -k gevent -w 1), "
                    "gthread (gunicorn -k gthread -w 1, threading mode), werkzeug (flask run, threads)")
    ap.add_argument("--servers", default="huizhen,bare")
    ap.add_argument("--loadgen-procs", type=int, default=1)
    ap.add_argument("--redis", default="", help="REDIS_URL for the servers (message queue + limiter storage)")
    ap.add_argument("--db-name", default="huizhen_bench", help="the one-node run's database (dropped and rebuilt)")
    ap.add_argument("--port", type=int, default=5071)
    ap.add_argument("--worker-connections", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=1,
                    help="gevent worker processes (gunicorn -w); more than one needs --redis for the message queue")
    ap.add_argument("--realistic", metavar="LOW-HIGH", help="one step where each participant sends at its own rate "
                    "drawn from LOW-HIGH msg/s (e.g. 0.05-0.2), after every room's first message; replaces --rate")
    ap.add_argument("--cluster", action="store_true", help="also run on two gunicorn/gevent nodes behind nginx "
                    "with Redis and PostgreSQL of their own (tests/cluster.py)")
    ap.add_argument("--recovery", default="", help="on the cluster, after the load: comma list of redis,postgresql "
                    "stopped for --outage s while a writer writes; time to the last stored message shown")
    ap.add_argument("--outage", type=float, default=20, help="seconds each --recovery fault lasts")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--profile", type=Path, help="record py-spy folded stacks of each server into this folder")
    args = ap.parse_args(argv)
    rates: list[float | tuple[float, float]] = [float(r) for r in args.rate.split(",")]
    if args.realistic:
        low, high = (float(x) for x in args.realistic.split("-"))
        rates = [(low, high)]
    if args.workers > 1 and not args.redis:
        ap.error("--workers above 1 needs --redis: each process relays the others' broadcasts through it")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    kinds = [k for k in args.servers.split(",") if k]

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="huizhen-bench-"))
    info = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "load_avg_start": os.getloadavg(), "versions": versions(), "argv": sys.argv, "logs": str(workdir)}
    print(f"huizhen chat bench {info['date']}  nproc={info['nproc']}  load avg {info['load_avg_start']}")
    print("  " + "  ".join(f"{k} {v}" for k, v in info["versions"].items()))
    if args.db == "postgresql" and "gevent" in modes:
        info["psycopg_gevent"] = psycopg_gevent_check()
        print(f"  psycopg under gevent: {info['psycopg_gevent']}")

    rooms: list = []
    db_url = database_url(args.db, workdir, args.db_name)
    if "huizhen" in kinds:
        t = time.perf_counter()
        rooms = prepare(db_url, args.rooms)
        info["prepare_s"] = time.perf_counter() - t
        print(f"  prepared {args.db} with {len(rooms)} scheduled consults in {info['prepare_s']:.1f} s", flush=True)
    else:
        rooms = [(i, f"bench-room-{i}", None) for i in range(args.rooms)]

    results = []
    for mode in modes:
        for kind in kinds:
            server = start_server(mode, kind, args.port, db_url, args.redis, workdir, args.worker_connections,
                                  args.workers)
            try:
                my_rooms = rooms if kind == "huizhen" else [(i, ref, None) for i, ref, _ in rooms]
                results += run_load(server, my_rooms, rates, args.duration, args.drain, args.loadgen_procs,
                                    PASSWORD, db_url, args.profile, first=bool(args.realistic))
            finally:
                stop_server(server)

    recovery: list[dict[str, Any]] = []
    if args.cluster or args.recovery:
        cluster = start_cluster()
        try:
            t = time.perf_counter()
            cluster_rooms = prepare(cluster.database_url, args.rooms + 1, fresh=False)
            recovery_room, cluster_rooms = cluster_rooms[-1], cluster_rooms[:-1]  # the outage writer's own
            print(f"  prepared the cluster's database with {len(cluster_rooms)} + 1 consults in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            addrs = pinned_addresses(cluster)
            print(f"  nginx pins {addrs['a']} to node 0 and {addrs['b']} to node 1: each room spans both", flush=True)
            for kind in kinds if args.cluster else []:
                server = serve_on_cluster(cluster, kind)
                my_rooms = cluster_rooms if kind == "huizhen" else [(i, ref, None) for i, ref, _ in cluster_rooms]
                results += run_load(server, my_rooms, rates, args.duration, args.drain, args.loadgen_procs,
                                    PASSWORD, "", None, first=bool(args.realistic), local_addrs=addrs)
            serve_on_cluster(cluster, "huizhen")
            interval = float(cluster.env.get("RESYNC_SECONDS", 5))
            for fault in [f for f in args.recovery.split(",") if f]:
                recovery.append(measure_recovery(cluster, recovery_room, fault, args.outage, interval))
                print("  " + recovery_table(recovery[-1:]).splitlines()[-1], flush=True)
        finally:
            cluster.close()

    info["wall_s"] = time.perf_counter() - started
    info["load_avg_end"] = os.getloadavg()
    print()
    print(table(results))
    if recovery:
        print()
        print(recovery_table(recovery))
    print(f"\nwall clock {info['wall_s']:.0f} s; load avg at end {info['load_avg_end']}; server logs in {workdir}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results, "recovery": recovery}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
