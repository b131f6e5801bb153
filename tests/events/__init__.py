"""Tests of the pure event layer (bindings, adapters, signal, outcome)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data"


def load_fixture(name: str) -> Any:
    """A fresh copy of a JSON payload from tests/data/."""
    return copy.deepcopy(json.loads((DATA / name).read_text(encoding="utf-8")))
