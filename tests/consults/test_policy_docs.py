"""docs/architecture.md publishes the access matrix: the table there is the code's."""

from __future__ import annotations

import re
from pathlib import Path

from webapp.consults.policy import MATRIX, Action, Stage, Standing

LETTERS = {"R": Standing.REQUESTER, "L": Standing.LEAD_SPECIALIST, "S": Standing.SPECIALIST,
           "T": Standing.TRAINEE, "C": Standing.COORDINATOR, "O": Standing.OFFERED, "I": Standing.INVITED,
           "P": Standing.SPEAKER}


def test_the_published_matrix_is_the_policys():
    text = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text(encoding="utf-8")
    header = "| action | " + " | ".join(s.value for s in Stage) + " |"
    assert header in text
    rows = {}
    for line in text[text.index(header):].splitlines()[2:]:
        m = re.match(r"\| `([a-z_]+)` \| (.*) \|$", line)
        if not m:
            break
        rows[Action(m.group(1))] = [cell.strip() for cell in m.group(2).split("|")]
    assert set(rows) == set(Action)
    for action, cells in rows.items():
        for stage, cell in zip(Stage, cells, strict=True):
            shown = {LETTERS[c] for c in cell if c != "—"}
            assert shown == {s for s in Standing if action in MATRIX[s][stage]}, (action, stage)
