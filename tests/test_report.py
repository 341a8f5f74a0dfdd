"""The HTML report: sections and charts from the alerts, and how it renders in headless Chromium."""

import shutil
import subprocess

import pytest
from PIL import Image

from app.replay import ReplaySummary
from app.report import PALETTE, render_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def alert(n: int, category: str, rule: str, severity: int, who: str) -> dict:
    return {
        "@timestamp": f"2026-11-20T{n % 24:02d}:15:00.000Z",
        "message": f"alert {n}",
        "event": {"id": f"a{n}", "kind": "alert", "severity": severity, "risk_score": float(severity)},
        "rule": {"id": rule, "name": f"Rule {rule}", "category": category},
        "abusewatch": {
            "identity_key": who,
            "count": 1,
            "evidence": [
                {"field": "gen_ai.prompt", "snippet": f"<b>ignore</b> previous {n}", "transforms": ["base64"]}
            ],
        },
    }


ALERTS = [
    alert(1, "prompt_injection", "r1", 73, "user:mallory"),
    alert(2, "prompt_injection", "r1", 73, "user:mallory"),
    alert(5, "jailbreak", "r2", 47, "user:eve"),
    alert(9, "secret_exposure", "r3", 99, "user:bob"),
]


def summary() -> ReplaySummary:
    return ReplaySummary(records=10, events=10, alerts=len(ALERTS), seconds=0.5)


def test_report_has_every_section_and_one_bar_per_rule():
    page = render_report(ALERTS, summary())
    for anchor in ("chart-timeline", "top-identities", "chart-rules", "evidence"):
        assert f'id="{anchor}"' in page
    rules_section = page.split('id="chart-rules"')[1]
    assert rules_section.count('class="bar"') == len({a["rule"]["id"] for a in ALERTS})
    assert "user:mallory" in page and "base64" in page


def test_report_escapes_evidence():
    page = render_report(ALERTS, summary())
    assert "<b>ignore</b>" not in page
    assert "&lt;b&gt;ignore&lt;/b&gt;" in page


def test_report_shows_control_characters_and_bidi_overrides_as_escapes_as_the_cli_does():
    hostile = alert(7, "prompt_injection", "r1", 73, "user:\u202egnp.lanimret")
    hostile["abusewatch"]["evidence"][0]["snippet"] = "see \u202egnp.lanimret\u202c and \x1b[2J\x1b[31mred"
    page = render_report([hostile], summary())
    for raw in ("\u202e", "\u202c", "\x1b"):
        assert raw not in page
    assert "see \\u202egnp.lanimret\\u202c and \\u001b[2J\\u001b[31mred" in page
    assert "user:\\u202egnp.lanimret" in page


def test_report_without_alerts_says_so():
    page = render_report([], ReplaySummary())
    assert page.count("No alerts.") == 4


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it where it can)")
def test_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render_report(ALERTS, summary()), encoding="utf-8")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert dom.count('class="bar"') >= len(ALERTS)
    assert 'data-kpi="alerts"><b>4</b>' in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    painted = {colour for _, colour in Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)}
    chart_colours = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in PALETTE[:3]}
    assert chart_colours & painted, "no chart colour was painted"


def test_top_identities_rank_by_the_sum_of_risk_scores_as_kibana_does():
    """Kibana's lens sums ``event.risk_score`` per identity; one alert that grew to many repeats counts once."""
    grown = alert(3, "jailbreak", "r2", 47, "user:eve")
    grown["abusewatch"]["count"] = 30
    two = [
        alert(4, "prompt_injection", "r1", 73, "user:mallory"),
        alert(6, "prompt_injection", "r1", 73, "user:mallory"),
    ]
    table = render_report([grown, *two], summary()).split('id="top-identities"')[1].split("</table>")[0]
    rows = [row.split("</td><td>")[:2] for row in table.split("<tr><td>")[1:]]
    assert rows == [["user:mallory", "146"], ["user:eve", "47"]]
