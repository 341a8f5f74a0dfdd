"""docs/exfiltration.md's false-positive check on the public corpus states what ``bench.bench_exfil --background``
measures today (the corpus grows; a stale figure hides new alerts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import corpora
from bench.bench_exfil import background

DOC = Path(__file__).resolve().parents[1] / "docs" / "exfiltration.md"


@pytest.mark.slow
def test_the_documented_background_figures_are_measured():
    corpora.build()  # cached after the first build; offline then
    measured = background()
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    paragraph = text[text.index("`python -m bench.bench_exfil --background`") :]
    stated = re.search(r"each of the ([\d,]+) texts .*? (\d+) alerts \(([\d.]+) %\)", paragraph)
    by_rule = re.search(r"(\d+) `pii-output` and (\d+) `url-image`", paragraph)
    assert stated and by_rule, "the paragraph no longer states the figures in the expected words"
    assert int(stated[1].replace(",", "")) == measured["texts"]
    assert int(stated[2]) == measured["alerts"]
    assert float(stated[3]) == pytest.approx(measured["alert_rate"] * 100, abs=0.0005)
    assert {"abw-exfil-pii-output": int(by_rule[1]), "abw-exfil-url-image": int(by_rule[2])} == measured["by_rule"]
