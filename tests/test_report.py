"""`taskfleet report`: a self-contained HTML file, checked in headless Chromium (no console
errors, one bar per task attempt event, a screenshot that is not blank), sampling above the
bar budget, lanes for events without a worker slot, and the PNG timeline."""

from __future__ import annotations

import os
import re
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from helpers_events import CHROMIUM_ARGS, chromium_path, ev, synthetic_events, write_events
from taskfleet.cli import main
from taskfleet.events.schema import ATTEMPT_OUTCOMES
from taskfleet.monitoring.report import EXCEPTION, build_report, collect

XSS_ID = "</script><script>window.__pwned=1</script>"


def attempt_events(events: list[dict]) -> int:
    return sum(1 for e in events if e["event_type"] in ATTEMPT_OUTCOMES)


def report_events() -> list[dict]:
    events = synthetic_events(250, hosts=3, workers_per_host=3, seed=21)
    # Hostile text from a task must stay text; a zero-length attempt must still be a bar.
    events.append(
        ev(
            "task_exception",
            30.0,
            "host-00",
            task_id=XSS_ID,
            attempt=1,
            worker_id=1,
            elapsed_time=0.5,
            exception="ValueError: <img src=x onerror=alert(1)>",
        )
    )
    events.append(
        ev(
            "task_completed",
            31.0,
            "host-01",
            task_id="instant",
            attempt=1,
            worker_id=2,
            elapsed_time=0.0,
            retry=False,
        )
    )
    events.append(ev("spot_termination", 40.0, "host-02"))
    return events


def test_report_is_self_contained(tmp_path: Path) -> None:
    events = report_events()
    path = write_events(tmp_path / "events.jsonl", events)
    out = tmp_path / "report.html"
    data = build_report([path], out)
    page = out.read_text()
    assert len(data.attempts) == attempt_events(events)
    assert not data.sampled
    assert f'data-attempts="{attempt_events(events)}"' in page
    # Nothing is loaded from elsewhere: no external scripts, styles or images.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js is inside
    assert XSS_ID not in page  # only ever escaped
    for figure in ("timeline", "throughput", "histogram"):
        assert f'<div id="{figure}"' in page
    assert "Failures" in page and "ValueError" in page


def test_rows_are_worker_processes_grouped_by_host(tmp_path: Path) -> None:
    path = write_events(tmp_path / "events.jsonl", report_events())
    data = collect([path])
    assert data.rows[:3] == ["host-00 #1", "host-00 #2", "host-00 #3"]
    assert data.row_hosts == sorted(data.row_hosts)
    assert len(data.rows) == 9


def test_large_inputs_sample_the_timeline_and_say_so(tmp_path: Path) -> None:
    events = synthetic_events(600, hosts=2, workers_per_host=4, seed=3, p_exception=0.05)
    path = write_events(tmp_path / "events.jsonl", events)
    out = tmp_path / "report.html"
    data = build_report([path], out, max_bars=200)
    assert data.sampled and len(data.shown) == 200
    failed = [i for i in range(len(data.attempts)) if data.attempts.outcome[i] >= EXCEPTION]
    assert 0 < len(failed) <= 100
    assert set(failed) <= set(data.shown), "every failed attempt is kept, up to half"
    page = out.read_text()
    assert f"200 of {len(data.attempts):,}" in page
    # Throughput and histogram still count everything.
    assert data.summary.events == len(events)


def test_events_without_worker_slots_get_lanes(tmp_path: Path) -> None:
    """rms-cloud-tasks events name no worker: each host's attempts go into non-overlapping
    lanes, as many as ran at once."""
    events = []
    for i in range(12):
        start = (i // 3) * 2.0  # three at a time on one host
        events.append(
            {
                "timestamp": f"2025-06-11T22:05:{start + 1.5:09.6f}",
                "hostname": "h1",
                "event_type": "task_completed",
                "task_id": f"a-{i}",
                "elapsed_time": 1.5,
                "retry": False,
                "result": None,
            }
        )
    data = collect([write_events(tmp_path / "events.jsonl", events)])
    assert data.rows == ["h1 lane 1", "h1 lane 2", "h1 lane 3"]
    a = data.attempts
    for row in range(3):
        spans = sorted(
            (a.start[i], a.start[i] + a.elapsed[i]) for i in range(len(a)) if a.row[i] == row
        )
        assert all(end <= next_start + 1e-9 for (_, end), (next_start, _) in pairwise(spans))


def test_png_timeline(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = write_events(tmp_path / "events.jsonl", report_events())
    png = tmp_path / "timeline.png"
    build_report([path], tmp_path / "r.html", png=png)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 300
        assert len(image.convert("RGB").getcolors(1 << 20)) > 10


def test_report_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_events(tmp_path / "events.jsonl", report_events())
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(path), "-o", str(out), "--title", "Nightly <run>"])
    assert exit_info.value.code == 0
    assert "<title>Nightly &lt;run&gt;</title>" in out.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "missing.jsonl"), "-o", str(out)])
    assert exit_info.value.code == 1
    assert "does not exist" in capsys.readouterr().err


def browser_or_skip() -> str:
    """Debian's chromium (.ci/run installs it): skip without it locally, fail in CI."""
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium and the playwright package for the report test")
        pytest.skip("chromium or playwright not installed")
    return path


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    chromium = browser_or_skip()
    from io import BytesIO

    from PIL import Image
    from playwright.sync_api import sync_playwright

    events = report_events()
    path = write_events(tmp_path / "events.jsonl", events)
    out = tmp_path / "report.html"
    build_report([path], out)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_function(
                "['timeline','throughput','histogram'].every("
                "id => document.querySelector('#' + id + ' .main-svg'))",
                timeout=30_000,
            )
            bars = page.evaluate("document.querySelectorAll('#timeline .barlayer .point').length")
            pwned = page.evaluate("window.__pwned === undefined")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [url for url in requests if not url.startswith("file:")] == [], "works offline"
    assert bars == attempt_events(events)
    assert pwned, "event text must never run as script"
    image = Image.open(BytesIO(shot)).convert("RGB")
    assert image.height > 1500
    colors = image.getcolors(1 << 24) or []
    assert len(colors) > 50, "the screenshot is blank"
    white = (
        max(count for count, color in colors if color == (255, 255, 255))
        if any(color == (255, 255, 255) for _, color in colors)
        else 0
    )
    assert white < 0.97 * image.width * image.height


def test_summary_embedded_in_report_matches_monitor(tmp_path: Path, capsys) -> None:
    """One statistics code: the report's figures are the monitor's."""
    path = write_events(tmp_path / "events.jsonl", report_events())
    data = collect([path])
    with pytest.raises(SystemExit):
        main(["monitor", str(path), "--json"])
    monitor = orjson.loads(capsys.readouterr().out)
    report = data.summary.as_dict()
    for key in ("events", "tasks_completed", "dead_letters", "elapsed", "failures", "hosts"):
        assert report[key] == monitor[key], key
