"""Garbage-collector settings for a long-running server process (production's gevent worker).

A full collection walks every live object: with ~360,000 of them (the app, its imports, a
thousand open sockets) it stalled the worker 150–300 ms at a time, once or more a minute, and
every chat message waiting behind it was that much later (docs/benchmarks.md, the chat send
path). After start-up the app's own objects never become garbage, so they are moved out of the
collector's sight (gc.freeze), and the first generation is collected less often (fewer, larger
young collections; each is cheap, the objects a message makes die young).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time

from flask import Flask

LONG_COLLECTION_MS = 50.0  # a collection this long is written to stderr
_started: list[float] = []


def parse_thresholds(value: str) -> tuple[int, int, int]:
    """GC_THRESHOLDS ("10000,20,20") as three non-negative integers; ValueError otherwise."""
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"GC_THRESHOLDS must be three non-negative integers like 10000,20,20, not {value!r}")
    first, second, third = (int(p) for p in parts)
    if first == 0:  # a first threshold of 0 turns automatic collection off: memory would only grow
        raise ValueError("GC_THRESHOLDS' first value must be above 0 (0 turns the garbage collector off)")
    return first, second, third


def _report_long_collections(phase: str, info: dict) -> None:
    """gc callback: time each collection; a long one goes to stderr (no logging inside the collector)."""
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    if not _started:
        return
    took_ms = (time.perf_counter() - _started.pop()) * 1000
    if took_ms >= LONG_COLLECTION_MS:
        line = (f"huizhen gc: {time.strftime('%Y-%m-%d %H:%M:%S')} generation {info.get('generation')} collection "
                f"took {took_ms:.0f} ms ({info.get('collected', 0)} collected)\n")
        with contextlib.suppress(OSError, ValueError):
            os.write(sys.stderr.fileno(), line.encode())


def settle_garbage_collector(app: Flask) -> bool:
    """With GC_FREEZE_AT_START: collect once, freeze what start-up built, set GC_THRESHOLDS; True if done."""
    if not app.config.get("GC_FREEZE_AT_START"):
        return False
    thresholds = parse_thresholds(app.config.get("GC_THRESHOLDS", "10000,20,20"))
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    if _report_long_collections not in gc.callbacks:
        gc.callbacks.append(_report_long_collections)
    return True
