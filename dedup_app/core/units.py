"""Numbers for people: byte counts and durations, as the CLI and the window show them."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal units, as file managers show them)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def format_duration(seconds: float) -> str:
    """5.25 -> '5.2s', 75 -> '1m 15s', 3665 -> '1h 01m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def count_of(n: int, one: str, many: str | None = None) -> str:
    """(1, 'group') -> '1 group', (2, 'group') -> '2 groups', (3, 'copy', 'copies') -> '3 copies'."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"
