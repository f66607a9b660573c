"""Peak memory and CPU of checking one image, per megapixel, in the child process uploads use.

    .venv/bin/python -m bench.image_memory [--sizes 1000,2000,4000,6000,7000] [--repeat 2]

For each size and kind (PNG RGB, PNG RGBA, JPEG RGB) it writes an image, then runs
``webapp/files/content.py`` exactly as ``webapp.files.services.check_content`` does (a fresh
``python -I`` child, the request on stdin) with no memory limit, and reads the child's peak RSS
and CPU time from ``wait4``. A 1×1 PNG gives the child's baseline (interpreter + Pillow).
Prints one table; MAX_IMAGE_PIXELS and IMAGE_MEMORY_LIMIT_MB are chosen from it
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
CHILD = ROOT / "webapp" / "files" / "content.py"
# Linux counts a forked child's peak RSS from the parent's size at fork, and this process holds
# large images: a small launcher starts the child and reports its rusage on stderr.
LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, s, u = os.wait4(p.pid, 0); "
            "sys.stderr.write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime} {os.waitstatus_to_exitcode(s)}')")


def make_image(side: int, kind: str) -> bytes:
    """A flat picture with some lines (compresses like a scan or a screenshot)."""
    mode = "RGBA" if kind == "png-rgba" else "RGB"
    image = Image.new(mode, (side, side), (200, 220, 240, 255)[: len(mode)])
    draw = ImageDraw.Draw(image)
    for i in range(0, side, max(1, side // 50)):
        draw.line([(i, 0), (side - i, side)], fill=(20, 40, 60, 255)[: len(mode)], width=3)
    out = io.BytesIO()
    if kind == "jpeg":
        image.save(out, format="JPEG", quality=90)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def run_child(data: bytes, kind: str, limit_mb: int = 0) -> tuple[float, float, float, bool]:
    """(peak RSS MB, CPU s, wall s, accepted) of one check in a fresh child."""
    request = {"kind": "jpeg" if kind == "jpeg" else "png", "max_pixels": 10**9, "memory_limit_mb": limit_mb}
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout:
        stdin.write(json.dumps(request).encode() + b"\n" + data)
        stdin.seek(0)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-I", "-c", LAUNCHER, sys.executable, "-I", str(CHILD)],
                              stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env={"PATH": os.defpath},
                              check=True)
        wall = time.perf_counter() - started
        maxrss_kb, cpu, code = done.stderr.decode().split()[-3:]
        stdout.seek(0)
        line = stdout.readline()
        header = json.loads(line) if line.strip() else {}
    return int(maxrss_kb) / 1024, float(cpu), wall, bool(header.get("ok")) and code == "0"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,2000,4000,6000,7000", help="square sides in pixels")
    ap.add_argument("--kinds", default="png-rgb,png-rgba,jpeg")
    ap.add_argument("--repeat", type=int, default=2, help="runs per cell; the largest peak is kept")
    ap.add_argument("--memory-limit-mb", type=int, default=0,
                    help="run the children under this IMAGE_MEMORY_LIMIT_MB and report which are accepted")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")

    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, Pillow {Image.__version__}, load {os.getloadavg()[0]:.2f}")
    base_rss, base_cpu, _, _ = max(run_child(make_image(1, "png-rgb"), "png-rgb") for _ in range(args.repeat))
    print(f"# child baseline (1×1 PNG): {base_rss:.0f} MB peak RSS, {base_cpu:.2f} s CPU\n")
    limit = args.memory_limit_mb
    if limit:
        print(f"# children limited to {limit} MB of address space (IMAGE_MEMORY_LIMIT_MB)\n")
    print("| kind | size | MP | file KB | peak RSS MB | above baseline MB | MB per MP | CPU s | wall s | accepted |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for side in sizes:
            data = make_image(side, kind)
            runs = [run_child(data, kind, limit) for _ in range(args.repeat)]
            assert limit or all(ok for *_, ok in runs), f"{kind} {side} was refused"
            rss = max(r[0] for r in runs)
            cpu = min(r[1] for r in runs)
            wall = min(r[2] for r in runs)
            mp = side * side / 1e6
            print(f"| {kind} | {side}×{side} | {mp:.0f} | {len(data) / 1024:.0f} | {rss:.0f} | "
                  f"{rss - base_rss:.0f} | {(rss - base_rss) / mp:.1f} | {cpu:.2f} | {wall:.2f} | "
                  f"{'yes' if all(ok for *_, ok in runs) else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
