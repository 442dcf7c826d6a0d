"""Human durations on the command line: ``90`` or ``90s``, ``30m``, ``6h``, ``1d``,
``2w``, and sums of them (``1h30m``); and seconds written back the same way."""

from __future__ import annotations

import re

import typer

UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")


def parse(text: str) -> int:
    """Seconds in ``text``; ``typer.BadParameter`` (a usage error, exit 2) otherwise."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    if not _WHOLE.fullmatch(value):
        raise typer.BadParameter(
            f"{text!r} is not a duration: use seconds or a number with a unit, "
            "like 30m, 6h, 1d, 1h30m (units: w d h m s)"
        )
    return sum(int(amount) * UNITS[unit] for amount, unit in _PART.findall(value))


def format_seconds(seconds: int) -> str:
    """``86400`` → ``1d``, ``5400`` → ``1h30m``, ``0`` → ``0s``."""
    parts, left = [], seconds
    for unit, size in UNITS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"
