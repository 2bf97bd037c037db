"""The dashboard's pure formatting: ages, timestamps, payload previews, chart geometry.

Plain functions of their inputs (no I/O), so the pages' numbers and pictures are tested
directly.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime, tzinfo

__all__ = ["PAYLOAD_PREVIEW", "age", "preview", "spark", "when", "zoned"]

PAYLOAD_PREVIEW = 16 * 1024
"""The most payload bytes a job page shows."""


def age(ms: int | None, now: float) -> str:
    if ms is None:
        return "-"
    seconds = max(0.0, now - ms / 1000)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def spark(points: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """An inline SVG chart (120x32 box): its line, the area under it, and its peak and last."""
    width, height, pad = 120.0, 32.0, 2.0
    peak = max((v for _, v in points), default=0.0)
    scale = 0.0 if peak <= 0 else (height - 2 * pad) / peak
    span = max(end - start, 1.0)
    xy = [
        (min(max((t - start) / span * width, 0.0), width), height - pad - v * scale)
        for t, v in points
    ]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    area = ""
    if len(xy) >= 2:
        area = f"{xy[0][0]:.1f},{height:.1f} {line} {xy[-1][0]:.1f},{height:.1f}"
    return {
        "points": line,
        "area": area,
        "peak": peak,
        "last": points[-1][1] if points else 0.0,
        "width": int(width),
        "height": int(height),
    }


def preview(payload: bytes, view: str) -> tuple[str, str, bool]:
    """The payload as text, JSON or hex (capped); returns (view used, text, truncated)."""
    truncated = len(payload) > PAYLOAD_PREVIEW
    head = payload[:PAYLOAD_PREVIEW]
    if view in ("auto", "json") and not truncated:
        try:
            text = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
            return "json", text[:PAYLOAD_PREVIEW], len(text) > PAYLOAD_PREVIEW
        except (ValueError, UnicodeDecodeError):
            pass
    if view == "json":
        view = "auto"  # too big or not JSON: shown as text or hex
    if view in ("auto", "text"):
        try:
            text = head.decode()
            if (
                view == "text"
                or text.isprintable()
                or all(c.isprintable() or c in "\n\r\t" for c in text)
            ):
                return "text", text, truncated
        except UnicodeDecodeError:
            pass
    lines: list[str] = []
    for offset in range(0, len(head), 16):
        chunk = head[offset : offset + 16]
        hexed = " ".join(f"{b:02x}" for b in chunk)
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexed:<47}  {shown}")
    return "hex", "\n".join(lines), truncated


def zoned(moment: datetime, zone: tzinfo) -> str:
    """A fire time in its schedule's zone: ``2026-12-07 02:00 CET (+0100)``."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z (%z)")
