"""report_html.py: a self-contained page, every value escaped, checked as a browser renders it."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import select
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from provisioner.causes import CauseTally, explain
from provisioner.chart import MAX_CHART_POINTS
from provisioner.report_html import CSP, render_report, write_report
from tests.summaries import summary_of

HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMAGE = '"><img src="http://attacker.invalid/x.png" onerror="alert(2)">'
HOSTILE_STYLE = "</style><style>body{background:url(http://attacker.invalid/bg.png)}</style>"
SEED = 20261125  # the timeline's random traffic is the same on every run
# Elements the page may hold: text, tables, the chart. Nothing that loads or runs anything.
PAGE_TAGS = (
    "html head meta title style body header section h1 h2 h3 p dl dt dd table thead tbody tr th "
    "td strong code pre ul li span a svg desc rect line text polyline circle"
)
ALLOWED_TAGS = frozenset(PAGE_TAGS.split())
BROWSER_TIMEOUT = 15.0  # seconds for any one answer from Chromium; it takes about one


def realistic_summary(points: int = 300) -> dict[str, Any]:
    """summary.json's keys as a run writes them (summary_of makes them a Summary): a run with
    failures, lookups, 429s and hostile strings."""
    tally = CauseTally()
    failures = [
        *[(row, "20404", "failed", "The requested resource was not found") for row in range(7, 47)],
        *[(row, "45731", "failed", HOSTILE) for row in range(50, 54)],
        *[(row, "invalid_address_sid", "invalid", HOSTILE_IMAGE) for row in range(60, 75)],
        (80, "timeout", "failed", "no answer within 30s; the web chat may exist"),
        *[(row, "", "not_attempted", "the run stopped first") for row in range(1200, 1235)],
        (90, "45999", "failed", f"New failure {HOSTILE_STYLE}"),
    ]
    for row, code, status, message in failures:
        cause = explain(code, status, message, "javascript:alert(3)" if code == "45999" else "")
        tally.add(
            row,
            cause,
            key=f"cust-{row}{HOSTILE if row == 7 else ''}",
            status=status,
            message=message,
        )
    randomness = random.Random(SEED)
    timeline = []
    rate, concurrency = 5.0, 4
    for second in range(points):
        throttled = 1 if second in (40, 41, 150) else 0
        if throttled:
            rate, concurrency = rate * 0.7, max(1, concurrency - 1)
        else:
            rate = min(5.0, rate + 0.05)
        sent = max(0, round(rate + randomness.uniform(-1, 1)))
        timeline.append(
            {
                "t": float(second),
                "sent": sent,
                "throttled": throttled,
                "others": 0,
                "rate": rate,
                "concurrency": concurrency,
            }
        )
    return {
        "run_id": "20261125T100000Z",
        "input": f"customers {HOSTILE}.csv",
        "started_at": "2026-11-25T10:00:00+00:00",
        "ended_at": "2026-11-25T10:05:00+00:00",
        "duration_seconds": 300.4,
        "rows": 1234,
        "counts": {
            "created": 1100,
            "existing": 50,
            "invalid": 15,
            "failed": 34,
            "not_attempted": 35,
        },
        "requests_sent": 1190,
        "exit_code": 3,
        "stop_reason": f"interrupted {HOSTILE}",
        "dry_run": False,
        "warnings": [f"row 12: PreEngagementData is not JSON {HOSTILE}"],
        "rate": {"requested": 5.0, "settled": 4.5, "lowest": 2.45, "throttled_429": 3},
        "limits": {"concurrency_requested": 4, "concurrency_settled": 2},
        "lookups": {"found": 3, "absent": 2, "duplicates": 0, "failed": 1},
        "causes": tally.causes(),
        "failing_rows": tally.failing_rows(),
        "timeline": timeline,
        "files": {"results": "outputs/20261125T100000Z/results.csv"},
        "rerun_command": f"provisioner create 'customers {HOSTILE}.csv' --rate 4.5 --concurrency 2",
        "settings": {"rate": {"value": 5.0, "source": "file (provisioner.toml)"}},
    }


class PageParts(HTMLParser):
    """Every element, attribute and style block of a page, for checking what it may load."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def parts_of(page: str) -> PageParts:
    parser = PageParts()
    parser.feed(page)
    parser.close()
    return parser


# --- the page as text -------------------------------------------------------------------------


def test_the_page_can_load_nothing_and_run_nothing():
    """No element that fetches or runs; no URL outside a link's href; the CSP forbids the rest."""
    parts = parts_of(render_report(summary_of(realistic_summary())))
    tags = {tag for tag, _ in parts.elements}
    assert tags <= ALLOWED_TAGS, tags - ALLOWED_TAGS
    for tag, attributes in parts.elements:
        for name, value in attributes.items():
            assert not name.startswith("on"), (tag, name)
            if (tag, name) != ("a", "href"):
                assert not re.search(r"(?i)(https?:|//|javascript:|url\()", value), (
                    tag,
                    name,
                    value,
                )
            else:
                assert value.startswith("https://www.twilio.com/docs/api/errors/"), value
    assert len(parts.styles) == 1
    assert not re.search(r"(?i)(url\(|@import|https?:)", parts.styles[0])
    csp = [
        a["content"]
        for tag, a in parts.elements
        if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:"]
    assert csp == [CSP]


def test_every_hostile_string_is_text():
    page = render_report(summary_of(realistic_summary()))
    for hostile in (HOSTILE, HOSTILE_IMAGE, HOSTILE_STYLE):
        assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:alert(3)" in page  # shown as text, never as a link
    assert 'href="javascript' not in page


@pytest.mark.parametrize("points", [0, 1, 2, 2000])
def test_the_chart_is_sensible_for_any_length(points):
    summary = realistic_summary(points)
    page = render_report(summary_of(summary))
    numbers = re.findall(r'\s(?:x|y|x1|x2|y1|y2|width|height|cx|cy)="([^"]*)"', page)
    numbers += [n for p in re.findall(r'points="([^"]*)"', page) for n in re.split("[ ,]", p)]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", n) for n in numbers), "NaN or inf in the chart"
    if points == 0:
        assert "<svg" not in page
        assert "No requests were sent in this run: nothing to chart." in page
        return
    polylines = re.findall(r'<polyline class="sent" points="([^"]*)"', page)
    circles = re.findall(r'<circle class="sent"', page)
    assert len(polylines) + len(circles) == 1
    if points == 1:
        assert circles
    else:
        assert len(polylines[0].split()) <= MAX_CHART_POINTS
    assert '<polyline class="concurrency"' in page
    assert "time since the run started" in page


def test_no_rate_limit_breaks_the_rate_line_but_nothing_else():
    timeline = [
        {
            "t": float(t),
            "sent": 3,
            "throttled": 0,
            "others": 0,
            "rate": None if 10 <= t < 20 else 5.0,
            "concurrency": 2,
        }
        for t in range(30)
    ]
    page = render_report(summary_of({**realistic_summary(), "timeline": timeline}))
    assert page.count('<polyline class="rate"') == 2
    assert page.count('<polyline class="sent"') == 1


def test_an_empty_summary_still_renders():
    page = render_report(summary_of({}))
    assert "<h1>Run </h1>" in page
    assert "unknown exit code" in page


def test_write_report_is_for_the_owner_only(tmp_path):
    path = tmp_path / "report.html"
    summary = realistic_summary()
    write_report(path, summary_of(summary))
    assert path.read_text(encoding="utf-8") == render_report(summary_of(summary))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# --- the page in a real browser ---------------------------------------------------------------


def find_chromium() -> str | None:
    return next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )


class DevTools:
    """Chromium driven over --remote-debugging-pipe (fds 3 and 4): the DevTools protocol as
    NUL-separated JSON, so the test needs no websocket library and opens no port."""

    def __init__(self, executable: str, profile: Path) -> None:
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def onto_fds_3_and_4() -> None:  # in the child, before exec: Chromium's fixed fds
            commands, answers = os.dup(commands_read), os.dup(answers_write)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                # Whatever Chromium itself would fetch goes to a closed loopback port: nothing
                # leaves the machine, and the page's own requests are watched below.
                "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--window-size=1280,900",
                "--force-device-scale-factor=1",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=onto_fds_3_and_4,
            close_fds=False,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the attached page, once there is one) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                assert "error" not in answer, answer
                result: dict[str, Any] = answer["result"]
                return result
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event named `method`, waiting for it if it has not come yet."""
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._read())

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + BROWSER_TIMEOUT
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._answers], [], [], deadline - time.monotonic())
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._answers, 1 << 16)
            assert chunk, "Chromium closed the DevTools pipe"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._commands)
        os.close(self._answers)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium not found (install it: apt-get install -y chromium; .ci/run does)")
    devtools = DevTools(executable, tmp_path / "profile")
    try:
        target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
        devtools.session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        devtools.call("Network.enable")
        devtools.call("Page.enable")
        yield devtools
    finally:
        devtools.close()


# What a person sees, measured in the page once Chromium has laid it out. DevTools evaluates
# this although the page itself may run no script (its CSP forbids every script).
MEASURE = """JSON.stringify({
  text: document.body.innerText,
  headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent),
  scripts: document.querySelectorAll('script').length,
  loaders: document.querySelectorAll('img, iframe, object, embed, link, audio, video').length,
  handlers: [...document.querySelectorAll('*')].flatMap(e => [...e.attributes])
    .filter(a => a.name.startsWith('on')).length,
  chart: (() => { const r = document.querySelector('svg.chart').getBoundingClientRect();
                  return [r.width, r.height]; })(),
  shapes: [...document.querySelectorAll('svg.chart polyline, svg.chart rect')].map(e => {
    const r = e.getBoundingClientRect();
    return [e.getAttribute('class') || e.tagName, r.width, r.height]; }),
  counts: [...document.querySelectorAll('#counts tbody tr')].map(r => r.innerText),
})"""


@pytest.mark.slow
def test_report_in_chromium_shows_the_run_draws_the_chart_and_fetches_nothing(browser, tmp_path):
    summary = realistic_summary()
    path = tmp_path / "report.html"
    write_report(path, summary_of(summary))
    url = path.as_uri()
    browser.call("Page.navigate", url=url)
    browser.wait_for("Page.loadEventFired")
    seen = json.loads(
        browser.call("Runtime.evaluate", expression=MEASURE, returnByValue=True)["result"]["value"]
    )

    # The page's only request is the page itself (which shows the watch works); nothing blocked.
    requested = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    assert requested == [url]
    assert not [e for e in browser.events if e.get("method") == "Network.loadingFailed"]

    assert (seen["scripts"], seen["loaders"], seen["handlers"]) == (0, 0, 0)
    assert seen["headings"] == [
        "Run 20261125T100000Z",
        "The run",
        "Rows by status",
        "Why rows were not created, and what to do",
        "First failing rows of each cause",
        "Lookups at Twilio (rows whose answer was lost)",
        "Sending rate over time",
        "Warnings",
        "Rerun",
        "Settings and files",
    ]
    text = seen["text"]
    assert "Exit 3: the run stopped early" in text
    assert f"stopped because\ninterrupted {HOSTILE}" in text  # the hostile text, shown as text
    assert [row.split("\t")[:3] for row in seen["counts"]] == [
        ["created", "1,100", "89.1%"],
        ["existing", "50", "4.1%"],
        ["invalid", "15", "1.2%"],
        ["failed", "34", "2.8%"],
        ["not_attempted", "35", "2.8%"],
    ]
    for cause in summary["causes"]:
        assert f"{cause.count}\t{cause.code}\t{cause.meaning}\t{cause.next_step}" in text
    assert "40\t20404\taddress not found in this account or region" in text
    assert f"7\tcust-7{HOSTILE}\tfailed\tThe requested resource was not found" in text
    assert f"60\tcust-60\tinvalid\t{HOSTILE_IMAGE}" in text
    assert "found\t3\tthe web chat existed at Twilio" in text
    assert "provisioner create 'customers" in text
    assert "concurrency settled\t2" in text  # limits.concurrency_settled, as its key names it

    width, height = seen["chart"]
    assert width > 800
    assert height > 250
    drawn = {kind for kind, w, h in seen["shapes"] if w > 0 and h > 0}
    assert {"sent", "rate", "concurrency", "throttled"} <= drawn
    assert len([s for s in seen["shapes"] if s[0] == "throttled"]) == 3  # one bar per 429 second

    # A full-page screenshot for a person to look at when this test fails or the page changes.
    metrics = browser.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = browser.call(
        "Page.captureScreenshot",
        format="png",
        captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": metrics["height"], "scale": 1},
    )
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "report.png").write_bytes(png)


def test_a_run_that_wrote_errors_xlsx_and_errors_csv_shows_the_command_of_each():
    summary = realistic_summary()
    summary["rerun_commands"] = {
        "errors.xlsx": f"provisioner create out/r1/errors.xlsx --note {HOSTILE}",
        "errors.csv": "provisioner create out/r1/errors.csv --xlsx",
    }
    summary["rerun_command"] = summary["rerun_commands"]["errors.xlsx"]

    page = render_report(summary_of(summary))

    rerun = page[page.index('<section id="rerun">') :]
    rerun = rerun[: rerun.index("</section>")]
    assert rerun.index("out/r1/errors.xlsx") < rerun.index("out/r1/errors.csv --xlsx")
    assert rerun.count("<pre>") == 2
    assert HOSTILE not in page


# Where each line of the rerun command starts, once Chromium has laid it out: a character's
# line is the top of its box.
LINE_STARTS = """(() => {
  const node = document.querySelector('#rerun pre code').firstChild;
  const range = document.createRange();
  const starts = []; let top = null;
  for (let i = 0; i < node.length; i++) {
    range.setStart(node, i); range.setEnd(node, i + 1);
    const box = range.getClientRects()[0];
    if (!box) continue;
    if (top !== null && Math.round(box.top) > top) starts.push(i);
    top = Math.round(box.top);
  }
  const pre = document.querySelector('#rerun pre');
  return JSON.stringify({text: node.data, starts, overflow: pre.scrollWidth - pre.clientWidth});
})()"""
NARROW_PAGE = 420  # CSS pixels: a phone, where a rerun command takes several lines


@pytest.mark.slow
def test_the_rerun_command_wraps_at_spaces_and_breaks_only_an_over_long_word(
    browser: DevTools, tmp_path: Path
) -> None:
    summary = realistic_summary()
    long_word = "--note=" + "x" * 120  # wider than the narrow page: it must break somewhere
    summary["rerun_command"] = (
        "provisioner create outputs/20261125T100000Z/errors.csv --out outputs --rate 4.5 "
        f"--concurrency 2 --column CustomerFriendlyName=Customer {long_word} --timeout 30"
    )
    path = tmp_path / "report.html"
    write_report(path, summary_of(summary))
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=NARROW_PAGE, height=800, deviceScaleFactor=1, mobile=False,
    )  # fmt: skip
    browser.call("Page.navigate", url=path.as_uri())
    browser.wait_for("Page.loadEventFired")
    seen = json.loads(
        browser.call("Runtime.evaluate", expression=LINE_STARTS, returnByValue=True)["result"][
            "value"
        ]
    )

    text, starts = seen["text"], seen["starts"]
    assert starts  # the command does take several lines
    inside = [start for start in starts if text[start - 1] != " "]
    word_start = text.index(long_word)
    # Every break inside a word is inside the one word longer than a line.
    assert all(word_start < start < word_start + len(long_word) for start in inside)
    assert inside  # and that word is broken rather than pushed off the page
    assert seen["overflow"] <= 0
