"""One self-contained HTML page about a replay, for people without Kibana.

Alerts by category over time, top identities, rule hit counts, example evidence and what alert exceptions
suppressed. Charts are inline SVG, so the page needs no network, no JavaScript and no files beside it.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

from app.replay import ReplaySummary
from app.terminal import terminal_safe
from detectors.event import ANONYMOUS

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
SEVERITY_NAMES = {21: "low", 47: "medium", 73: "high", 99: "critical"}


def render_report(alerts: list[dict[str, Any]], summary: ReplaySummary, title: str = "LLM Abuse Watch report") -> str:
    """The whole page as a string."""
    sections = [
        _header(title, summary),
        _section("Alerts by category over time", _timeline_svg(alerts), "chart-timeline"),
        _section("Top identities by alert risk", _top_identities(alerts), "top-identities"),
        _section("Rule hit counts", _rule_bars_svg(alerts), "chart-rules"),
        _section("Example evidence", _evidence_table(alerts), "evidence"),
        _section("Suppressed by alert exceptions", _suppressed_table(summary), "suppressed"),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1100px; }}
h1 {{ margin-bottom: .2rem; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
td, th {{ border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: left; vertical-align: top; }}
.kpis {{ display: flex; gap: 1rem; flex-wrap: wrap; }}
.kpi {{ background: #f5f7fa; border-radius: 6px; padding: .6rem 1rem; }}
.kpi b {{ display: block; font-size: 1.5rem; }}
code {{ background: #f5f5f5; padding: 0 .2rem; word-break: break-all; }}
.legend span {{ margin-right: 1rem; }} .swatch {{ display: inline-block; width: .8rem; height: .8rem; }}
</style></head>
<body>
{"".join(sections)}
</body></html>
"""


def _e(value: object) -> str:
    """Text for the page: control characters and bidirectional overrides shown as escapes, as the CLI shows them
    (attacker text must not reorder what the page shows), then HTML-escaped."""
    return html.escape(terminal_safe(value), quote=True)


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>\n'


def _header(title: str, summary: ReplaySummary) -> str:
    kpis = (
        ("events", f"{summary.events:,}"),
        ("alerts", f"{summary.alerts:,}"),
        ("shadow alerts", f"{summary.shadow_alerts:,}"),
        ("suppressed detections", f"{summary.suppressed_by_exception.total():,}"),
        ("dead letters", f"{summary.dead_letters:,}"),
        ("times not believed", f"{summary.times_not_believed:,}"),
        ("events/s", f"{summary.events_per_second:,.0f}"),
    )
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    cards = "".join(f'<div class="kpi" data-kpi="{_e(k)}"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in kpis)
    return f'<h1>{_e(title)}</h1><p>Generated {generated}.</p><div class="kpis">{cards}</div>\n'


def _empty(message: str = "No alerts.") -> str:
    return f"<p>{_e(message)}</p>"


def _timeline_svg(alerts: list[dict[str, Any]], width: int = 1000, height: int = 260, buckets: int = 24) -> str:
    if not alerts:
        return _empty()
    times = [_epoch(a["@timestamp"]) for a in alerts]
    start, end = min(times), max(times)
    span = max(end - start, 1.0)
    categories = sorted({a["rule"]["category"] for a in alerts})
    color = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}
    counts: list[Counter[str]] = [Counter() for _ in range(buckets)]
    for alert, at in zip(alerts, times, strict=True):
        index = min(buckets - 1, int((at - start) / span * buckets))
        counts[index][alert["rule"]["category"]] += 1
    peak = max(sum(c.values()) for c in counts) or 1
    bar_width = (width - 60) / buckets
    plot_height = height - 40
    bars = []
    for index, bucket in enumerate(counts):
        y = plot_height
        for category in categories:
            n = bucket[category]
            if not n:
                continue
            h = n / peak * (plot_height - 10)
            y -= h
            x = 50 + index * bar_width
            bars.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_width - 2:.1f}" height="{h:.1f}" '
                f'fill="{color[category]}"><title>{_e(category)}: {n}</title></rect>'
            )
    axis = (
        f'<line x1="50" y1="{plot_height}" x2="{width - 10}" y2="{plot_height}" stroke="#999"/>'
        f'<text x="50" y="{height - 15}" font-size="12">{_e(_label(start))}</text>'
        f'<text x="{width - 10}" y="{height - 15}" font-size="12" text-anchor="end">{_e(_label(end))}</text>'
        f'<text x="45" y="15" font-size="12" text-anchor="end">{peak}</text>'
    )
    legend = "".join(
        f'<span><span class="swatch" style="background:{color[c]}"></span> {_e(c)}</span>' for c in categories
    )
    return (
        f'<svg role="img" aria-label="alerts over time" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{axis}{"".join(bars)}</svg><p class="legend">{legend}</p>'
    )


def _rule_bars_svg(alerts: list[dict[str, Any]], width: int = 1000, limit: int = 20) -> str:
    if not alerts:
        return _empty()
    hits = Counter(a["rule"]["name"] for a in alerts).most_common(limit)
    peak = hits[0][1]
    row = 22
    height = row * len(hits) + 10
    rows = []
    for index, (name, n) in enumerate(hits):
        y = 5 + index * row
        w = n / peak * (width - 420)
        rows.append(
            f'<text x="350" y="{y + 15}" font-size="12" text-anchor="end">{_e(name[:55])}</text>'
            f'<rect class="bar" x="360" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE[0]}">'
            f"<title>{_e(name)}: {n}</title></rect>"
            f'<text x="{365 + w:.1f}" y="{y + 15}" font-size="12">{n}</text>'
        )
    return (
        f'<svg role="img" aria-label="rule hit counts" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(rows)}</svg>'
    )


def _top_identities(alerts: list[dict[str, Any]], limit: int = 15) -> str:
    """Identities ranked by the sum of their alerts' ``event.risk_score``: the definition of Kibana's "Top identities
    by risk" lens, so the report and the dashboard rank alike (a grown alert is one alert, as it is one document)."""
    if not alerts:
        return _empty()
    risk: defaultdict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    categories: defaultdict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        who = alert.get("abusewatch", {}).get("identity_key", ANONYMOUS)
        risk[who] += alert["event"].get("risk_score", 0)
        count[who] += 1
        categories[who].add(alert["rule"]["category"])
    top = sorted(risk, key=lambda k: (-risk[k], k))[:limit]
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{risk[k]:.0f}</td><td>{count[k]}</td>"
        f"<td>{_e(', '.join(sorted(categories[k])))}</td></tr>"
        for k in top
    )
    return f"<table><tr><th>identity</th><th>risk</th><th>alerts</th><th>categories</th></tr>{rows}</table>"


def _evidence_table(alerts: list[dict[str, Any]], limit: int = 25) -> str:
    if not alerts:
        return _empty()
    ranked = sorted(alerts, key=lambda a: (-a["event"]["severity"], a["@timestamp"]))[:limit]
    rows = []
    for alert in ranked:
        evidence = alert["abusewatch"].get("evidence") or [{}]
        first = evidence[0]
        transforms = ", ".join(first.get("transforms") or [])
        rows.append(
            f"<tr><td>{_e(SEVERITY_NAMES.get(alert['event']['severity'], alert['event']['severity']))}</td>"
            f"<td>{_e(alert['rule']['name'])}</td><td>{_e(alert['abusewatch'].get('identity_key', ''))}</td>"
            f"<td>{_e(first.get('field', ''))}{' (' + _e(transforms) + ')' if transforms else ''}</td>"
            f"<td><code>{_e(first.get('snippet', ''))}</code></td></tr>"
        )
    return (
        "<table><tr><th>severity</th><th>rule</th><th>identity</th><th>field</th><th>evidence (redacted)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _suppressed_table(summary: ReplaySummary) -> str:
    """Detections per alert exception: they went to the shadow alerts instead of the queue."""
    if not summary.suppressed_by_exception:
        return _empty("No detection was suppressed by an alert exception.")
    rows = "".join(
        f'<tr data-exception="{_e(k)}"><td>{_e(k)}</td><td>{n:,}</td></tr>'
        for k, n in summary.suppressed_by_exception.most_common()
    )
    return f"<table><tr><th>exception</th><th>detections suppressed</th></tr>{rows}</table>"


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _label(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M")
