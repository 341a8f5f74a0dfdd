"""Alert exceptions: impossible dates refused cleanly wherever exceptions load, and what `exceptions check` says about
each entry's reach (rules covered, critical ones, every rule) and lifetime (expiry more than --max-days ahead)."""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.stream.reload import ExceptionsWatcher, Reloader
from app.traffic.samples import sample_files
from detectors.exceptions import ExceptionsError, load_exceptions

TODAY = date(2026, 11, 23)  # the commands' "today" here: no test may start failing on a later date
STRONG_KEY = "q7Zr2xW9mT4vL8nK3pB6sD1f"  # the worker refuses weak redaction keys before it loads exceptions
SAMPLE = str(next(iter(sample_files().values())))
KNOWN_RULE = "abusewatch-anomaly-scraping-volume"
BAD_DATES = """\
- id: bad-date
  rules: [abusewatch-ml-jailbreak]
  match: {abusewatch.api_key_hash: [k1]}
  reason: r
  expires: 2027-02-30
- id: bad-month
  rules: [abusewatch-ml-jailbreak]
  match: {abusewatch.api_key_hash: [k1]}
  reason: r
  created: 2026-13-01
  expires: 2027-01-01
"""
runner = CliRunner()


@pytest.fixture(autouse=True)
def pinned_today(monkeypatch):
    monkeypatch.setattr("app.commands.exceptions._today", lambda: TODAY)


def entry(**overrides) -> dict:
    base = {
        "id": "bulk-job",
        "rules": [KNOWN_RULE],
        "match": {"abusewatch.api_key_hash": ["9f86d081"]},
        "reason": "Sanctioned bulk job, CHG-1",
        "expires": (TODAY + timedelta(days=90)).isoformat(),
    }
    return {key: value for key, value in {**base, **overrides}.items() if value is not None}


def write(path: Path, *entries: dict) -> Path:
    path.write_text(yaml.safe_dump(list(entries), sort_keys=False))
    return path


def check(path: Path, *options: str):
    return runner.invoke(cli, ["exceptions", "check", *options, str(path)], env={"ABW_CONFIG": ""})


# -- impossible dates ------------------------------------------------------------------------------------------


def test_an_impossible_date_is_an_error_of_its_entry_and_field(tmp_path):
    path = tmp_path / "e.yml"
    path.write_text(BAD_DATES)
    with pytest.raises(ExceptionsError) as raised:
        load_exceptions(path)
    assert raised.value.errors == [
        f"{path}: entry 1 (id 'bad-date'): expires: 2027-02-30 is not a date: day is out of range for month",
        f"{path}: entry 2 (id 'bad-month'): created: 2026-13-01 is not a date: month must be in 1..12",
    ]


def test_an_impossible_date_as_a_match_value_is_refused_like_any_date(tmp_path):
    path = tmp_path / "e.yml"
    path.write_text("- {id: d, rules: [r], match: {organization.id: [2027-02-30]}, reason: r, expires: 2027-01-01}\n")
    with pytest.raises(ExceptionsError) as raised:
        load_exceptions(path)
    assert raised.value.errors == [
        f"{path}: entry 1 (id 'd'): match: 'organization.id': '2027-02-30' is not text to YAML "
        "(true/yes, dates, null): quote it"
    ]


def test_a_value_no_yaml_constructor_takes_is_an_error_of_the_file(tmp_path):
    path = tmp_path / "e.yml"
    path.write_text("- {id: d, rules: [r], match: {organization.id: [!!int abc]}, reason: r, expires: 2027-01-01}\n")
    with pytest.raises(ExceptionsError) as raised:
        load_exceptions(path)
    assert raised.value.errors == [f"{path}: cannot read: invalid literal for int() with base 10: 'abc'"]


@pytest.mark.parametrize(
    "command",
    [
        ["exceptions", "check", "{bad}"],
        ["replay", SAMPLE, "--alerts-out", "{out}/a.jsonl"],
        ["backtest", "--input", SAMPLE, "--builtin"],
        ["worker"],  # before it contacts Kafka
    ],
)
def test_an_impossible_date_ends_each_command_with_the_file_and_entry_not_a_traceback(tmp_path, command):
    bad = tmp_path / "bad.yml"
    bad.write_text(BAD_DATES)
    args = [arg.replace("{bad}", str(bad)).replace("{out}", str(tmp_path)) for arg in command]
    env = {
        "ABW_CONFIG": "",
        "ABW_DETECTION__EXCEPTIONS_PATH": str(bad),
        "ABW_DETECTION__REDACTION_KEY": STRONG_KEY,
        "ABW_KAFKA__BOOTSTRAP": "nowhere:1",
    }
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: {bad}: entry 1 (id 'bad-date'): expires: 2027-02-30 is not a date" in result.stderr
    assert f"error: {bad}: entry 2 (id 'bad-month'): created: 2026-13-01 is not a date" in result.stderr
    assert "2 problem(s): no exception was loaded" in result.stderr and "Traceback" not in result.output


def test_a_running_worker_rejects_an_impossible_date_with_the_documented_line(tmp_path, caplog):
    path = write(tmp_path / "e.yml", entry())
    reloader = Reloader(list, exceptions=ExceptionsWatcher(path, lambda: load_exceptions(path)))
    path.write_text(BAD_DATES)
    with caplog.at_level(logging.ERROR, logger="app.stream.reload"):
        changes = reloader.load()
    assert changes.exceptions is None
    assert [(record.getMessage(), record.exc_info) for record in caplog.records] == [
        (
            f"alert exceptions reload rejected, the running ones stay: {path}: entry 1 (id 'bad-date'): expires: "
            "2027-02-30 is not a date: day is out of range for month",
            None,
        ),
        (
            f"alert exceptions reload rejected, the running ones stay: {path}: entry 2 (id 'bad-month'): created: "
            "2026-13-01 is not a date: month must be in 1..12",
            None,
        ),
    ]


# -- what check says about each entry's reach ------------------------------------------------------------------


def covers(output: str, exception_id: str) -> tuple[int, int]:
    """(covered, known) from the entry's line of `exceptions check`."""
    found = re.search(rf"^{re.escape(exception_id)}: .*; covers (\d+) of (\d+) known rules$", output, re.MULTILINE)
    assert found, output
    return int(found[1]), int(found[2])


def test_check_says_how_many_known_rules_each_entry_covers(tmp_path):
    path = write(
        tmp_path / "e.yml",
        entry(id="one-rule"),
        entry(id="scraping", rules=None, categories=["scraping"]),
        entry(id="scraping-and-jailbreak", rules=None, categories=["scraping", "jailbreak"]),
        entry(id="everything", rules=["*"], all_rules=True),
    )
    result = check(path)
    assert result.exit_code == 0, result.output
    one, known = covers(result.stdout, "one-rule")
    scraping, _ = covers(result.stdout, "scraping")
    both, _ = covers(result.stdout, "scraping-and-jailbreak")
    assert one == 1 and 1 < scraping < both < known
    assert covers(result.stdout, "everything") == (known, known)
    assert "covers every known rule" not in result.stdout  # all_rules says so already


def test_check_warns_of_critical_rules_covered_without_failing_strict(tmp_path):
    path = write(tmp_path / "e.yml", entry(id="ci-bot-secrets", rules=None, categories=["secret_exposure"]))
    result = check(path, "--strict")
    assert result.exit_code == 0, result.output
    warning = re.search(rf"^warning: {re.escape(str(path))}: ci-bot-secrets: covers (\d+) critical rule\(s\): (.+)$",
                        result.stdout, re.MULTILINE)  # fmt: skip
    assert warning and int(warning[1]) >= 1, result.stdout
    assert "1 covering critical rules" in result.stdout
    quiet = check(write(tmp_path / "e.yml", entry(id="scraping-only", rules=["abusewatch-anomaly-scraping-*"])))
    assert "critical rule(s)" not in quiet.stdout and "0 covering critical rules" in quiet.stdout


def test_check_fails_strict_on_an_entry_covering_every_rule_without_all_rules(tmp_path):
    path = write(tmp_path / "e.yml", entry(id="broad-glob", rules=["*-*"]))
    result = check(path)
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {path}: broad-glob: covers every known rule: say so with rules: ['*'] and all_rules: true"
        in result.stdout
    )
    assert "1 covering every rule" in result.stdout
    assert check(path, "--strict").exit_code == 1
    said_so = write(tmp_path / "e.yml", entry(id="red-team", rules=["*"], all_rules=True))
    assert check(said_so, "--strict").exit_code == 0


def test_check_warns_of_an_expiry_more_than_max_days_ahead_and_strict_fails(tmp_path):
    far = write(tmp_path / "far.yml", entry(id="far", expires=(TODAY + timedelta(days=366)).isoformat()))
    result = check(far)
    assert result.exit_code == 0, result.output
    assert f"warning: {far}: far: expires 2027-11-24, more than 365 days ahead (--max-days)" in result.stdout
    assert "1 expiring more than 365 days ahead" in result.stdout
    assert check(far, "--strict").exit_code == 1
    assert check(far, "--strict", "--max-days", "400").exit_code == 0
    year = write(tmp_path / "year.yml", entry(id="year", expires=(TODAY + timedelta(days=365)).isoformat()))
    within = check(year, "--strict")
    assert within.exit_code == 0 and "warning" not in within.stdout, within.output
