"""Huizhen's test suite."""

import os

# Production apps built in tests must not freeze this process's garbage collector or change its
# thresholds for every later test (webapp/gctune.py has its own test).
os.environ.setdefault("GC_FREEZE_AT_START", "0")
