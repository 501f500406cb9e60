"""The dashboard page as one self-contained HTML document (issue 18).

Inline CSS, no script, no external asset (the Content-Security-Policy the trigger sends forbids
them), a viewport meta and a layout that folds to one column on a phone. Every value that came
from outside — referral and opportunity names, audit lines, reasons, ids — goes through
``esc``; the latency chart is SVG drawn here, so it needs no JavaScript either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from html import escape

from shared import __version__, drift
from shared.dashboard.data import DashboardData, HourLatency
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.state import HistoryEntry

Tokens = Callable[[str, str], str]  # (action, target) -> CSRF token

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1b1f24;background:#f4f6f8}
header{background:#0f3d5c;color:#fff;padding:12px 16px}
header h1{margin:0;font-size:1.25rem}
header p{margin:2px 0 0;opacity:.85;font-size:.85rem}
main{padding:12px 16px;max-width:1200px;margin:0 auto}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:12px 14px;
margin:0 0 14px}
h2{font-size:1.05rem;margin:0 0 8px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.tile{border:1px solid #d8dee4;border-radius:8px;padding:8px 10px;background:#fafbfc}
.tile b{display:block;font-size:1.35rem}
.tile span{font-size:.8rem;color:#57606a}
.ok{color:#1a7f37}.bad{color:#cf222e}.warn{color:#9a6700}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.88rem}
th,td{text-align:left;vertical-align:top;padding:5px 6px;border-bottom:1px solid #eaeef2}
th{background:#f6f8fa;font-weight:600}
td.id{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.78rem;word-break:break-all}
ul{margin:4px 0 0;padding-left:20px}
.notice{background:#ddf4ff;border:1px solid #54aeff;border-radius:8px;padding:8px 12px;
margin:0 0 14px}
.muted{color:#57606a;font-size:.82rem}
form{display:inline}
button{font:inherit;font-size:.85rem;padding:4px 10px;border-radius:6px;
border:1px solid #8c959f;background:#f6f8fa;cursor:pointer;margin:2px 0}
button.danger{border-color:#cf222e;color:#cf222e}
svg{width:100%;height:auto;max-height:320px}
@media (max-width:640px){
main{padding:8px}
section{padding:10px}
table,thead,tbody,tr,th,td{display:block}
thead{display:none}
tr{border-bottom:1px solid #d8dee4;padding:6px 0}
td{border:0;padding:2px 0}
td[data-label]::before{content:attr(data-label) ": ";font-weight:600;color:#57606a}
}
"""


def esc(value: object) -> str:
    """Text for HTML, quotes included (safe in element content and in attribute values)."""
    return escape("" if value is None else str(value), quote=True)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def page(data: DashboardData, *, action_url: str, tokens: Tokens, notice: str | None) -> str:
    """The whole page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="same-origin">',
        "<title>Co-sell Sync</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>Co-sell Sync</h1>",
        f"<p>version {esc(__version__)} · as of {esc(when(data.now))}</p></header><main>",
    ]
    if notice:
        parts.append(f'<p class="notice" role="status">{esc(notice)}</p>')
    if data.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in data.problems)
        parts.append(f'<p class="notice">Not everything could be read:</p><ul>{items}</ul>')
    parts += [
        _health(data),
        _drift(data, action_url, tokens),
        _poison(data, action_url, tokens),
        _chart(data),
        _recent(data),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _tile(value: object, label: str, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<div class="tile"><b{klass}>{esc(value)}</b><span>{esc(label)}</span></div>'


def _health(data: DashboardData) -> str:
    report = data.health
    healthy = report.status == "healthy"
    jobs = report.queues.get(SYNC_JOBS_QUEUE)
    poisoned = report.queues.get(POISON_QUEUE)
    tiles = [
        _tile(report.status, "status", "ok" if healthy else "bad"),
        _tile("—" if jobs is None else jobs, f"{SYNC_JOBS_QUEUE} depth"),
        _tile("—" if poisoned is None else poisoned, f"{POISON_QUEUE} depth",
              "bad" if poisoned else ""),
    ]  # fmt: skip
    for name, cursor in sorted(report.cursors.items()):
        tiles.append(_tile(age(cursor.age_seconds), f"cursor {name}: age"))
    if report.drift is not None:
        for kind, info in drift.KINDS.items():
            count = report.drift.counts.get(kind, 0)
            css = "bad" if count and info.degrades else "warn" if count else ""
            tiles.append(_tile(count, info.title, css))
        tiles.append(_tile(age(report.drift.age_seconds), "drift summary: age"))
    else:
        tiles.append(_tile("—", "drift: not scanned yet"))
    for name, status in sorted(report.tokens.items()):
        tiles.append(_tile(status, f"{name} token", "ok" if status == "ok" else "bad"))
    problems = ""
    if report.problems:
        problems = "<h2>Problems</h2><ul>" + "".join(
            f"<li>{esc(p)}</li>" for p in report.problems
        ) + "</ul>"  # fmt: skip
    last = f'<p>Last error: <span class="bad">{esc(report.last_error)}</span></p>'
    return (
        '<section id="health"><h2>Health</h2>'
        f'<div class="tiles">{"".join(tiles)}</div>'
        f"{last if report.last_error else ''}{problems}</section>"
    )


def _form(action_url: str, tokens: Tokens, action: str, target: str, label: str,
          css: str = "", *, confirm: bool = False) -> str:  # fmt: skip
    """A form posting ``action`` on ``target`` with its token; ``confirm`` adds a box the
    browser requires ticked (no script needed), which the trigger checks too."""
    klass = f' class="{css}"' if css else ""
    sure = (
        '<label class="muted"><input type="checkbox" name="confirm" value="yes" required> '
        "sure</label> "
        if confirm
        else ""
    )
    return (
        f'<form method="post" action="{esc(action_url)}">'
        f'<input type="hidden" name="action" value="{esc(action)}">'
        f'<input type="hidden" name="message" value="{esc(target)}">'
        f'<input type="hidden" name="token" value="{esc(tokens(action, target))}">'
        f'{sure}<button type="submit"{klass}>{esc(label)}</button></form>'
    )


def _table(headers: Iterable[str], rows: list[list[str]], empty: str) -> str:
    """A table whose cells are HTML already (escaped by the caller)."""
    names = list(headers)
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in names)
    body = "".join(
        "<tr>" + "".join(
            f'<td data-label="{esc(h)}"{" class=id" if h.endswith("id") else ""}>{cell}</td>'
            for h, cell in zip(names, row, strict=True)
        ) + "</tr>"
        for row in rows
    )  # fmt: skip
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _drift(data: DashboardData, action_url: str, tokens: Tokens) -> str:
    listing = data.listing
    scan = _form(action_url, tokens, "scan", "", "Scan now")
    if listing is None:
        said = (
            "No drift scan stored yet (the reconcile timer, `cosell drift` or Scan now store one)."
        )
        return (
            f'<section id="drift"><h2>Out of sync</h2><p class="muted">{esc(said)}</p>'
            f"{scan}</section>"
        )
    rows = [
        [
            esc(drift.KINDS[item.kind].title),
            esc(item.referral_id or "—"),
            esc(item.opportunity_id or "—"),
            esc(item.name or "—"),
            esc(when(item.since)),
            esc(item.detail),
        ]
        for item in listing.items
    ]
    seconds = (data.now - listing.checked_at).total_seconds()
    more = (
        f" (the first {len(listing.items)} of {listing.total})"
        if listing.total > len(listing.items)
        else ""
    )
    said = (
        f"Last scan {when(listing.checked_at)} ({age(max(0.0, seconds))} ago, by "
        f"{listing.source or 'unknown'}): {listing.total} item(s){more}."
    )
    table = _table(
        ("kind", "referral id", "opportunity id", "name", "since", "reason / detail"),
        rows,
        "Nothing out of sync at the last scan.",
    )
    return (
        f'<section id="drift"><h2>Out of sync</h2><p class="muted">{esc(said)} {scan}</p>'
        f"{table}</section>"
    )


def _poison(data: DashboardData, action_url: str, tokens: Tokens) -> str:
    rows: list[list[str]] = []
    for row in data.poison:
        message = row.message
        job = message.job
        buttons = ""
        if job is not None:
            buttons += _form(action_url, tokens, "replay", message.message_id, "Replay")
        buttons += " " + _form(
            action_url, tokens, "delete", message.message_id, "Delete", "danger", confirm=True
        )
        rows.append(
            [
                esc(message.message_id),
                esc(when(message.inserted_on)),
                esc(f"{job.kind} {job.id}" if job else "not a job"),
                esc(row.reason) + (f"<br>link: {esc(row.link_error)}" if row.link_error else ""),
                buttons,
            ]
        )
    shown = f" (the first {len(data.poison)})" if data.poison_depth > len(data.poison) else ""
    table = _table(
        ("message id", "poisoned at", "job", "reason", "actions"),
        rows,
        "The poison queue is empty.",
    )
    return (
        f'<section id="poison"><h2>Poison messages: {data.poison_depth}{esc(shown)}</h2>'
        '<p class="muted">Replay puts the job back on sync-jobs (fix the cause first); Delete '
        f"removes it for good (tick “sure” first).</p>{table}</section>"
    )


def _recent(data: DashboardData) -> str:
    rows = [_history_row(entry) for entry in data.recent]
    partial = " (partial: the history was cut short)" if data.history_partial else ""
    table = _table(
        ("at", "deal id", "outcome", "reason", "fields", "errors and audit", "ms", "calls"),
        rows,
        "No syncs recorded in the last 24 hours.",
    )
    return (
        f'<section id="recent"><h2>Recent syncs{esc(partial)}</h2>'
        '<p class="muted">Newest first; changed fields by name only.</p>'
        f"{table}</section>"
    )


def _history_row(entry: HistoryEntry) -> list[str]:
    lines = [*entry.errors, *entry.conflicts]
    if entry.failure is not None and entry.failure.summary not in lines:
        lines.append(entry.failure.summary)
    audit = "<br>".join(esc(line) for line in lines) or "—"
    css = "bad" if entry.outcome == "error" else ""
    return [
        esc(when(entry.at)),
        esc(entry.key),
        f'<span class="{css}">{esc(entry.outcome)}</span>' if css else esc(entry.outcome),
        esc(entry.reason),
        esc(", ".join(sorted({c.field for c in entry.changes})) or "—"),
        audit,
        esc(entry.duration_ms),
        esc(entry.remote_calls),
    ]


# -- the latency chart -----------------------------------------------------------------------

W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 10, 20, 24


def _chart(data: DashboardData) -> str:
    hours = data.latency
    timed = sum(h.count for h in hours)
    partial = f" (from {data.history_rows} rows read, cut short)" if data.history_partial else ""
    caption = (
        f"Sync duration p50 and p95 per hour (UTC), last {len(hours)} hours: {timed} syncs"
        f"{partial}."
    )
    return (
        f'<section id="latency"><h2>Latency</h2><p class="muted">{esc(caption)}</p>'
        f"{latency_svg(hours)}{_latency_table(hours)}</section>"
    )


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at least ``value``: the y axis' top."""
    for scale in (10, 100, 1000, 10_000, 100_000, 1_000_000):
        for step in (1, 2, 5):
            if value <= step * scale:
                return step * scale
    return value


def _duration(ms: float) -> str:
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def latency_svg(hours: list[HourLatency]) -> str:
    """Bars per hour: p95 light behind p50 dark, milliseconds on the y axis."""
    peak = max((h.p95_ms or 0 for h in hours), default=0)
    top = _nice_max(max(peak, 10))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))
    parts = [
        f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="sync latency per hour" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        tick = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#57606a">{_duration(tick)}</text>'
        )
    for index, hour in enumerate(hours):
        x = LEFT + index * slot
        for value, colour, inset in ((hour.p95_ms, "#9ecbff", 0.12), (hour.p50_ms, "#0f3d5c", 0.3)):
            if value is None:
                continue
            height = plot_h * min(value, top) / top
            parts.append(
                f'<rect x="{x + slot * inset:.1f}" y="{TOP + plot_h - height:.1f}" '
                f'width="{slot * (1 - 2 * inset):.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{esc(hour.hour.strftime('%H:00'))}: {value} ms</title></rect>"
            )
        if index % 3 == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" '
                f'font-size="11" fill="#57606a">{esc(hour.hour.strftime("%H:00"))}</text>'
            )
    legend_x, legend_y = W - RIGHT - 100, TOP - 4
    parts.append(
        f'<rect x="{legend_x}" y="{legend_y - 9}" width="10" height="10" fill="#0f3d5c"/>'
        f'<text x="{legend_x + 14}" y="{legend_y}" font-size="11">p50</text>'
        f'<rect x="{legend_x + 50}" y="{legend_y - 9}" width="10" height="10" fill="#9ecbff"/>'
        f'<text x="{legend_x + 64}" y="{legend_y}" font-size="11">p95</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _latency_table(hours: list[HourLatency]) -> str:
    rows = [
        [esc(h.hour.strftime("%Y-%m-%d %H:00")), esc(h.count), esc(h.p50_ms), esc(h.p95_ms)]
        for h in reversed(hours)
        if h.count
    ]
    table = _table(("hour (UTC)", "syncs", "p50 ms", "p95 ms"), rows, "No timed syncs.")
    return f"<details><summary>The numbers</summary>{table}</details>"
