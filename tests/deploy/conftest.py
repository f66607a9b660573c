"""Fixtures shared by the multi-node tests (the cluster harness itself is in tests/cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def parties(cluster_make) -> dict[str, Any]:
    """A scheduled consult between a rural doctor and a specialist, in the cluster's database."""
    rural = cluster_make.rural(name="Dr Ma Xiaoli")
    specialist = cluster_make.specialist(name="Dr Zhou Wei")
    consult = cluster_make.scheduled(rural, specialist)
    return {"rural": (rural.email, rural.id), "specialist": (specialist.email, specialist.id), "ref": consult.ref}
