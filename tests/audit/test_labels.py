"""Every audit action the code records has a label of its own (translated by its code), so the
audit log never shows a made-up "Availability: extra added" to a Chinese reader."""

from __future__ import annotations

import re
from pathlib import Path

from webapp.audit.labels import ACTION_LABELS

WEBAPP = Path(__file__).resolve().parents[2] / "webapp"
RECORDED = re.compile(r"record(?:_now|_refusal)?\(\s*\"([a-z_]+\.[a-z_]+)\"")


def test_every_recorded_action_has_a_label():
    recorded = {code for path in WEBAPP.rglob("*.py") for code in RECORDED.findall(path.read_text("utf-8"))}
    assert len(recorded) > 30, "the scan found the record(...) calls"
    assert sorted(recorded - set(ACTION_LABELS)) == []
