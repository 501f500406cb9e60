"""What every command prints: readable tables on stdout, or one JSON document with ``--json``;
progress and errors on stderr, so ``cosell ... --json | jq`` always gets clean JSON.

The streams are looked up at each write (not captured at start) so that pytest's ``capsys`` and
shell redirections both see the output.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

from pydantic import BaseModel

MAX_CELL = 60
CheckStatus = Literal["pass", "warn", "fail"]
_MARKS: dict[CheckStatus, str] = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
# Query parameters that carry secrets in URLs we print (the function key of a webhook URL).
_SECRET_PARAMS = frozenset({"code", "sig", "key", "token", "access_token"})


def jsonable(value: Any) -> Any:
    """Plain JSON types for pydantic models, dataclasses, dates, UUIDs, enums and tuples."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def cell(value: Any, *, width: int = MAX_CELL) -> str:
    """One table cell: short, on one line."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, datetime):
        text = value.isoformat(timespec="seconds").replace("+00:00", "Z")
    elif isinstance(value, list | tuple):
        text = ", ".join(cell(v, width=width) for v in value) or "-"
    elif isinstance(value, str):
        text = value
    else:
        plain = jsonable(value)
        text = json.dumps(plain, ensure_ascii=False) if isinstance(plain, dict) else str(plain)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def mask_url(url: str | None) -> str | None:
    """The URL with secret query values (a function key's ``code=``) replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "***" if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


class Output:
    """Writes a command's results in the mode the user asked for."""

    def __init__(self, *, json_mode: bool = False, wide: bool = False) -> None:
        self.json_mode = json_mode
        self.wide = wide  # --wide: table cells in full, never cut
        self._told_cut = False

    # -- plain text -----------------------------------------------------------------------------

    def line(self, text: str = "") -> None:
        """A line of readable output (suppressed in JSON mode: the document says it all)."""
        if not self.json_mode:
            print(text, file=sys.stdout)

    def note(self, text: str) -> None:
        """A remark for the human at the terminal (stderr: never mixed into JSON)."""
        print(text, file=sys.stderr)

    def error(self, message: str) -> None:
        """The reason a command failed: on stderr, and as ``{"error": ...}`` in JSON mode."""
        print(f"cosell: error: {message}", file=sys.stderr)
        if self.json_mode:
            self.json({"ok": False, "error": message})

    def json(self, document: Any) -> None:
        print(json.dumps(jsonable(document), indent=2, ensure_ascii=False), file=sys.stdout)

    # -- tables ---------------------------------------------------------------------------------

    def table(
        self,
        rows: Sequence[Sequence[Any]],
        headers: Sequence[str],
        *,
        title: str | None = None,
        empty: str = "(none)",
    ) -> None:
        if self.json_mode:
            return
        if title:
            self.line(title)
        if not rows:
            self.line(f"  {empty}")
            return
        width = sys.maxsize if self.wide else MAX_CELL
        cells = [[cell(v, width=width) for v in row] for row in rows]
        if not self.wide and not self._told_cut and any(c.endswith("…") for r in cells for c in r):
            # Never cut silently: say once where the full text is.
            self._told_cut = True
            self.note("note: long cells are cut (…); --wide shows them in full, --json as data")
        widths = [max(len(headers[i]), *(len(r[i]) for r in cells)) for i in range(len(headers))]
        for row in (list(headers), ["-" * w for w in widths], *cells):
            padded = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            self.line(("  " + "  ".join(padded)).rstrip())

    def pairs(self, items: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column key/value table."""
        if self.json_mode:
            return
        if title:
            self.line(title)
        width = max((len(k) for k, _ in items), default=0)
        for key, value in items:
            self.line(f"  {key.ljust(width)}  {cell(value, width=100)}")

    def check(self, status: CheckStatus, name: str, detail: str, fix: str | None = None) -> None:
        """One pass/fail line of ``config check`` (and the fix, when it failed)."""
        self.line(f"[{_MARKS[status]}] {name}: {detail}")
        if fix and status != "pass":
            self.line(f"       fix: {fix}")

    def progress(self, label: str, total: int) -> Progress:
        return Progress(label, total)


def confirm(question: str) -> bool:
    """Ask ``question`` on the terminal; False (and no question) when stdin is not one, so a
    script never deletes or writes without its ``--yes``."""
    if not sys.stdin.isatty():
        return False
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


class Progress:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, a line per tenth
    otherwise (log files and CI stay readable)."""

    WIDTH = 30

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = max(0, total)
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._started = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        self._draw()

    def finish(self) -> None:
        self._draw(final=True)
        if self._tty:
            print(file=sys.stderr)

    def _draw(self, *, final: bool = False) -> None:
        if self.total == 0:
            return
        fraction = self.done / self.total
        if self._tty:
            now = time.monotonic()
            if not final and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            print(f"\r{self._text(fraction)}", end="", file=sys.stderr, flush=True)
            return
        tenth = int(fraction * 10)
        if tenth != self._last_tenth and (tenth > self._last_tenth or final):
            self._last_tenth = tenth
            print(self._text(fraction), file=sys.stderr)

    def _text(self, fraction: float) -> str:
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        elapsed = time.monotonic() - self._started
        return f"{self.label} [{bar}] {self.done}/{self.total} ({elapsed:.1f}s)"
