"""One reader for the timestamps services send: epoch seconds or milliseconds, ISO 8601 text."""

from __future__ import annotations

import math
from datetime import datetime, timezone

__all__ = ["parse_timestamp"]

# Epoch values above this are milliseconds: 1e11 seconds is the year 5138.
_MS_THRESHOLD = 1e11


def parse_timestamp(value: object, *, unit: str = "auto") -> datetime | None:
    """An aware UTC ``datetime`` from what a service sent, or None when it is not a time.

    Args:
        value: epoch seconds or milliseconds (int/float), ISO 8601 text (``Z`` allowed), or a
            datetime (naive ones are taken as UTC).
        unit: ``"s"`` or ``"ms"`` for numbers; ``"auto"`` tells them apart by size.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        seconds = value / 1000 if unit == "ms" or (unit == "auto" and abs(value) >= _MS_THRESHOLD) else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None
