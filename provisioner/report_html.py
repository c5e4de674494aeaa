"""report.html: one self-contained page a person opens to see how a run went and what to do.

No script, no font, no image and no style from anywhere else: the page's Content-Security-Policy
allows inline styles and data: images only, so a browser opening it makes no request. Every value
is escaped, since customer data and servers' messages are untrusted. The sending rate over time
is an inline SVG chart (chart.py).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from provisioner.causes import CauseCount, FailingRow
from provisioner.chart import finite, render_chart
from provisioner.errors import ExitCode
from provisioner.report import learnt_options, visitors_line
from provisioner.summary import (
    ConcurrencyLimits,
    OtherTrafficSpell,
    Rate,
    SettingUsed,
    Summary,
    Visitors,
)
from provisioner.vocabulary import LookupResult, Status
from provisioner.writers import write_atomically

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
EXIT_WORDS: Mapping[int, tuple[str, str]] = {
    ExitCode.OK: ("every row is created or existing", "ok"),
    ExitCode.ROWS_FAILED: ("the run finished; some rows are invalid or failed", "warn"),
    ExitCode.NOTHING_SENT: ("nothing was sent (usage, input or configuration)", "bad"),
    ExitCode.STOPPED: ("the run stopped early", "bad"),
    ExitCode.INTERNAL: ("an internal error (a bug); the ledger keeps what was created", "bad"),
    ExitCode.BROKEN_PIPE: ("output went into a closed pipe; ended quietly", "warn"),
}
UNKNOWN_EXIT = ("unknown exit code", "bad")
# What each status and lookup result means, as the page shows it (vocabulary.py's words).
STATUS_WORDS = {status.value: status.words for status in Status}
LOOKUP_WORDS = {result.value: result.words for result in LookupResult if result.words}
FAILING_ROWS_PER_CAUSE = 10  # rows listed under each cause; errors.csv has them all
WARNINGS_SHOWN = 50  # warnings listed on the page; summary.json has them all
MESSAGE_CHARS = 300  # a server's message is cut here in the page's tables
ROUND_ABOVE = 100  # rates from here on are shown as whole numbers
BAR_WIDTH = 200  # pixels of the bar that shows a status's share of all rows


STYLE = """
:root { color-scheme: light; --muted: #555; --line: #d8d8d8; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #1a1a1a; background: #fff; margin: 0 auto; max-width: 1100px; padding: 0 20px 40px; }
h1 { font-size: 1.6em; margin: 24px 0 4px; } h2 { font-size: 1.2em; margin: 32px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.verdict { display: inline-block; padding: 4px 10px; border-radius: 4px; font-weight: 600; }
.ok { background: #e3f4e6; color: #14532d; } .warn { background: #fff3d6; color: #6b4500; }
.bad { background: #fde2e2; color: #7f1d1d; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px;
  border-bottom: 1px solid var(--line); }
th { background: #f4f4f4; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  font-size: 0.92em; }
/* A command wraps at its spaces; only a word longer than the line is broken inside. */
pre { background: #f6f6f6; padding: 10px; overflow-x: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; }
.msg { word-break: break-word; max-width: 480px; } .muted { color: var(--muted); }
td.url { word-break: break-all; max-width: 220px; font-size: 0.9em; }
table.rows { table-layout: fixed; } table.rows th:nth-child(1) { width: 8%; }
table.rows th:nth-child(2) { width: 24%; } table.rows th:nth-child(3) { width: 14%; }
table.rows td { word-break: break-word; }
.bar { display: inline-block; height: 10px; background: #1f5fbf; vertical-align: middle; }
.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 6px 20px;
  margin: 4px 0; }
.swatch { display: inline-block; width: 22px; height: 0; border-top: 3px solid; margin-right: 6px;
  vertical-align: middle; } .swatch.box { height: 10px; border-top: 0; }
svg.chart { width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
svg.chart text { font: 12px system-ui, sans-serif; fill: #333; }
h3 { font-size: 1em; margin: 18px 0 4px; }
"""


def render_report(summary: Summary) -> str:
    """The whole page for one run's summary (what summary.json holds); every value escaped."""
    sections = [
        _run_section(summary),
        _counts_section(summary.counts),
        _visitors_section(summary.visitors),
        _causes_section(summary.causes),
        _failing_section(summary.causes, summary.failing_rows),
        _lookups_section(summary.lookups),
        _rate_section(summary),
        _warnings_section(summary.warnings),
        _rerun_section(summary.rerun_command, summary.rerun_commands),
        _settings_section(summary.settings, summary.files),
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>provisioner run {_e(summary.run_id)}</title>\n"
        f"<style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body></html>\n"
    )


def write_report(path: Path, summary: Summary) -> None:
    """Write report.html atomically, readable by its owner only (it holds customer data)."""
    write_atomically(path, render_report(summary))


def _e(value: object) -> str:
    """Text of any value, escaped for HTML text and attributes."""
    return html.escape(str(value), quote=True)


def _number(value: object) -> str:
    """12,345 for counts; one decimal for rates; a dash when there is no value."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= ROUND_ABOVE:
            return f"{value:,.0f}"
        text = f"{value:,.2f}".rstrip("0")  # 4.5, 0.25, 5.0: no noise digits
        return text + "0" if text.endswith(".") else text
    return _e(value)


def _duration(seconds: object) -> str:
    value = finite(seconds)
    if value is None:
        return "—"
    whole = int(value)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m{whole % 60:02d}s"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{value:.1f}s"


def _words(key: str) -> str:
    return key.replace("_", " ")


def _run_section(summary: Summary) -> str:
    exit_code = summary.exit_code
    words, tone = EXIT_WORDS.get(exit_code, UNKNOWN_EXIT)
    facts = [
        ("input", f"<code>{_e(summary.input)}</code>"),
        ("started", _e(summary.started_at)),
        ("ended", _e(summary.ended_at)),
        ("duration", _duration(summary.duration_seconds)),
        ("rows in the input", _number(summary.rows)),
        ("requests sent", _number(summary.requests_sent)),
        ("exit code", f"{_e(exit_code)}: {_e(words)}"),
    ]
    if summary.stop_reason:
        facts.append(("stopped because", _e(summary.stop_reason)))
    if summary.dry_run:
        facts.append(("dry run", "yes: nothing was sent"))
    listing = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return (
        f"<header><h1>Run {_e(summary.run_id)}</h1>"
        f'<p class="verdict {tone}">Exit {_e(exit_code)}: {_e(words)}</p></header>\n'
        f'<section id="run"><h2>The run</h2><dl>{listing}</dl></section>'
    )


def _counts_section(counts: Mapping[str, int]) -> str:
    total = sum(n for n in counts.values() if isinstance(n, int)) or 1
    lines = []
    for status, count in counts.items():
        share = count / total if isinstance(count, int) else 0.0
        lines.append(
            f'<tr><td><strong>{_e(status)}</strong></td><td class="n">{_number(count)}</td>'
            f'<td class="n">{share:.1%}</td>'
            f'<td><span class="bar" style="width:{share * BAR_WIDTH:.0f}px">'
            f'</span></td><td class="muted">{_e(STATUS_WORDS.get(status, ""))}</td></tr>'
        )
    return (
        '<section id="counts"><h2>Rows by status</h2><table><thead><tr><th>status</th>'
        '<th class="n">rows</th><th class="n">share</th><th></th><th>meaning</th></tr></thead>'
        f"<tbody>{''.join(lines)}</tbody></table></section>"
    )


def _visitors_section(visitors: Visitors | None) -> str:
    """--sandbox-live-rate: the website's visitors during the run, served and refused."""
    if visitors is None:
        return ""
    return (
        '<section id="visitors"><h2>Website visitors on the same account (sandbox)</h2>'
        f"<p>{_e(visitors_line(visitors))}</p>" + _values_table("visitors", visitors) + "</section>"
    )


def _link(url: object) -> str:
    """An https link (a person's click, never a load); anything else stays text."""
    text = str(url or "")
    if text.startswith("https://"):
        shown = text.removeprefix("https://").removeprefix("www.")
        return f'<a href="{_e(text)}" rel="noreferrer noopener">{_e(shown)}</a>'
    return _e(text)


def _causes_section(causes: Sequence[CauseCount]) -> str:
    if not causes:
        return (
            '<section id="causes"><h2>Why rows were not created</h2>'
            "<p>Every row was created or already existed.</p></section>"
        )
    lines = []
    for cause in causes:
        examples = ", ".join(_e(row) for row in cause.example_rows)
        lines.append(
            f'<tr><td class="n">{_number(cause.count)}</td>'
            f"<td><code>{_e(cause.code)}</code></td>"
            f'<td class="msg">{_e(cause.meaning)}</td>'
            f'<td class="msg">{_e(cause.next_step)}</td>'
            f'<td>{examples}</td><td class="url">{_link(cause.more_info)}</td></tr>'
        )
    return (
        '<section id="causes"><h2>Why rows were not created, and what to do</h2><table><thead>'
        '<tr><th class="n">rows</th><th>code</th><th>what it means</th><th>next step</th>'
        "<th>e.g. rows</th><th>more</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table></section>"
    )


def _failing_section(causes: Sequence[CauseCount], failing_rows: Iterable[FailingRow]) -> str:
    by_code: dict[str, list[FailingRow]] = {}
    for row in failing_rows:
        listed = by_code.setdefault(row.code, [])
        if len(listed) < FAILING_ROWS_PER_CAUSE:
            listed.append(row)
    if not by_code:
        return ""
    order = [cause.code for cause in causes]
    order += [code for code in by_code if code not in order]
    parts = ['<section id="failing"><h2>First failing rows of each cause</h2>']
    for code in order:
        if code not in by_code:
            continue
        lines = "".join(
            f'<tr><td class="n">{_e(row.row)}</td><td><code>{_e(row.key)}'
            f"</code></td><td>{_e(row.status)}</td>"
            f'<td class="msg">{_e(_cut(row.message))}</td></tr>'
            for row in by_code[code]
        )
        parts.append(
            f'<h3>{_e(code or "no code")}</h3><table class="rows"><thead><tr><th class="n">row</th>'
            "<th>row key</th><th>status</th><th>message</th></tr></thead>"
            f"<tbody>{lines}</tbody></table>"
        )
    parts.append('<p class="muted">errors.csv lists every row that was not created.</p></section>')
    return "".join(parts)


def _cut(value: object) -> str:
    text = str(value or "")
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _lookups_section(lookups: Mapping[LookupResult, int]) -> str:
    if not lookups or not any(lookups.values()):
        return (
            '<section id="lookups"><h2>Lookups at Twilio</h2><p>No answer was lost: '
            "no row needed looking up.</p></section>"
        )
    lines = "".join(
        f'<tr><td><strong>{_e(name)}</strong></td><td class="n">{_number(count)}</td>'
        f'<td class="muted">{_e(LOOKUP_WORDS.get(name, ""))}</td></tr>'
        for name, count in lookups.items()
    )
    return (
        '<section id="lookups"><h2>Lookups at Twilio (rows whose answer was lost)</h2><table>'
        '<thead><tr><th>result</th><th class="n">rows</th><th>meaning</th></tr></thead>'
        f"<tbody>{lines}</tbody></table></section>"
    )


def _values_table(title: str, part: Rate | ConcurrencyLimits | Visitors) -> str:
    """A part's figures, one a line, named as summary.json names them."""
    lines = "".join(
        f'<tr><td>{_e(_words(figure.name))}</td><td class="n">'
        f"{_number(getattr(part, figure.name))}</td></tr>"
        for figure in fields(part)
    )
    return (
        f'<table class="values"><thead><tr><th>{_e(title)}</th><th></th></tr></thead>'
        f"<tbody>{lines}</tbody></table>"
    )


def _rate_section(summary: Summary) -> str:
    return (
        '<section id="rate"><h2>Sending rate over time</h2>'
        + render_chart(summary.timeline)
        + _values_table("rate (requests per second)", summary.rate)
        + _values_table(_limits_title(summary), summary.limits)
        + _other_traffic_table(summary.other_traffic)
        + "</section>"
    )


def _other_traffic_table(spells: Sequence[OtherTrafficSpell]) -> str:
    """When other traffic on the account was busy, and what the run slowed to for it."""
    rows = "".join(
        f"<tr><td>{_e(spell.from_)}</td><td>{_e(spell.until)}</td>"
        f'<td class="n">{_number(spell.throttled_429)}</td>'
        f'<td class="n">{_number(spell.yielded_to)}</td>'
        f'<td class="n">{_number(spell.others_estimated)}</td></tr>'
        for spell in spells
    )
    if not rows:
        return ""
    return (
        '<table class="values" id="other-traffic"><thead><tr><th colspan="5">other traffic on '
        "the account was busy (its 429s were not the account's limit; the run slowed to leave "
        "it room)</th></tr><tr><th>from (UTC)</th><th>until (UTC)</th><th>429s</th>"
        "<th>slowed to (requests/s)</th><th>others used, estimated (requests/s)</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _limits_title(summary: Summary) -> str:
    learnt = learnt_options(summary.rate, summary.limits)
    if not learnt:
        return "limits (none learnt below what was asked)"
    return f"limits learnt (pass {' '.join(learnt)} next time)"


def _warnings_section(warnings: Sequence[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{_e(_cut(warning))}</li>" for warning in warnings[:WARNINGS_SHOWN])
    more = len(warnings) - WARNINGS_SHOWN
    tail = f'<p class="muted">… and {more:,} more in summary.json.</p>' if more > 0 else ""
    return f'<section id="warnings"><h2>Warnings</h2><ul>{items}</ul>{tail}</section>'


def _rerun_section(command: str, by_file: Mapping[str, str]) -> str:
    if not command:
        return '<section id="rerun"><h2>Rerun</h2><p>Nothing left to send.</p></section>'
    commands = dict(by_file) if len(by_file) > 1 else {}
    if not commands:
        return (
            '<section id="rerun"><h2>Rerun</h2><p>To send the rows still to do, with the same '
            f"settings:</p><pre><code>{_e(command)}</code></pre></section>"
        )
    parts = "".join(
        f"<p>After fixing {_e(name)}{' instead' if number else ''}:</p>"
        f"<pre><code>{_e(text)}</code></pre>"
        for number, (name, text) in enumerate(commands.items())
    )
    return (
        '<section id="rerun"><h2>Rerun</h2><p>To send the rows still to do, with the same '
        f"settings:</p>{parts}</section>"
    )


def _settings_section(settings: Mapping[str, SettingUsed], files: Mapping[str, str]) -> str:
    parts = []
    if settings:
        lines = [
            f"<tr><td><code>{_e(name)}</code></td><td><code>{_e(setting.value)}</code></td>"
            f'<td class="muted">{_e(setting.source)}</td></tr>'
            for name, setting in settings.items()
        ]
        parts.append(
            "<table><thead><tr><th>setting</th><th>value</th><th>from</th></tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table>"
        )
    if files:
        lines = [
            f"<tr><td>{_e(name)}</td><td><code>{_e(path)}</code></td></tr>"
            for name, path in files.items()
        ]
        parts.append(
            "<table><thead><tr><th>file</th><th>path</th></tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table>"
        )
    if not parts:
        return ""
    return '<section id="settings"><h2>Settings and files</h2>' + "".join(parts) + "</section>"
