"""Options (``routes.yaml`` per function) as the planners read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InvalidInput


def flag(options: Mapping[str, Any], key: str) -> bool:
    """A yes/no option: ``true``, ``yes``, ``1`` (any case) or the boolean."""
    value = options.get(key, False)
    return value is True or str(value).lower() in ("true", "yes", "1")


def number(options: Mapping[str, Any], key: str, default: float) -> float:
    """A non-negative number option; InvalidInput (naming it) otherwise."""
    try:
        value = float(options.get(key, default))
    except (TypeError, ValueError):
        raise InvalidInput(f"options.{key}: expected a number", f"options.{key}") from None
    if value < 0:
        raise InvalidInput(f"options.{key}: must not be negative", f"options.{key}")
    return value
