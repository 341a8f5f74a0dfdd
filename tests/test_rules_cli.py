"""``abusewatch rules ...`` through typer's CliRunner."""

import shutil

from typer.testing import CliRunner

from app.cli import cli
from tests.fixtures.rules.kit import INVALID, OVERRIDE_ID, SHELL_TOOL_ID, VALID, rule_yaml

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(cli, ["rules", *args])


def test_test_command_passes_on_the_fixtures():
    result = _run("test", str(VALID))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].endswith(" failed")
    passed, failed = (int(part.split()[0]) for part in lines[-1].split(", "))
    assert passed >= 15
    assert failed == 0


def test_test_command_reports_failures_and_exits_1(tmp_path):
    text = rule_yaml("s:\n  gen_ai.prompt|contains: needle\ncondition: s", title="Needle rule")
    (tmp_path / "needle.yml").write_text(text.replace("match: ['x']", "match: ['no pin here']"), encoding="utf-8")
    result = _run("test", str(tmp_path))
    assert result.exit_code == 1
    assert "FAIL 'Needle rule'" in result.output
    assert "expected match, got no match" in result.output
    assert result.output.strip().splitlines()[-1] == "1 passed, 1 failed"


def test_test_command_counts_files_that_do_not_load(tmp_path):
    shutil.copy(INVALID / "bare_not.yml", tmp_path)
    result = _run("test", str(tmp_path))
    assert result.exit_code == 1
    assert "ERROR" in result.output
    assert result.output.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_lint_command(tmp_path):
    clean = _run("lint", str(VALID))
    assert clean.exit_code == 0, clean.output
    assert "5 rules, 0 errors, 0 warnings" in clean.output
    shutil.copy(INVALID / "unsupported_modifier.yml", tmp_path)
    broken = _run("lint", str(tmp_path))
    assert broken.exit_code == 1
    assert "modifier 'cidr'" in broken.output


def test_convert_command():
    result = _run("convert", "--target", "esql", str(VALID), "--rule", SHELL_TOOL_ID)
    assert result.exit_code == 0, result.output
    assert f"({SHELL_TOOL_ID})" in result.output
    assert "from logs-abusewatch.events-*" in result.output
    regex = _run("convert", "--target", "esql", str(VALID), "--rule", OVERRIDE_ID)
    assert regex.exit_code == 1 and "not convertible to esql: regex" in regex.output
    all_rules = _run("convert", str(VALID))
    assert all_rules.exit_code == 0
    assert "not convertible to lucene" in all_rules.output  # the cased fixture
    assert _run("convert", str(VALID), "--rule", "no-such-id").exit_code == 1
    assert _run("convert", str(VALID), "--target", "splunk").exit_code != 0
    wrong_format = _run("convert", str(VALID), "--format", "weird")
    assert wrong_format.exit_code == 2 and "not convertible" not in wrong_format.output  # refused before converting
    assert _run("convert", str(VALID), "--rule", OVERRIDE_ID, "--format", "kibana_ndjson").exit_code == 0
    dan = _run("convert", "--rule", "55f4a2e7-382b-4ce9-a3c4-64131743f2e8")  # built-in: has a case-sensitive group
    assert dan.exit_code == 0 and "# approximate, finds more than the engine: a case-sensitive part" in dan.output


def test_list_command():
    result = runner.invoke(cli, ["rules", "list", str(VALID)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert OVERRIDE_ID in result.output
    assert "5 rules loaded, 0 files with errors" in result.output


def test_list_renders_titles_literally_not_as_markup(tmp_path):
    title = '"Repeat [/] forever [bold]x[/bold]"'
    (tmp_path / "markup.yml").write_text(rule_yaml("s:\n  gen_ai.prompt|contains: x\ncondition: s", title=title))
    result = runner.invoke(cli, ["rules", "list", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "Repeat [/] forever [bold]x[/bold]" in result.output


def test_convert_reports_files_that_do_not_load_and_exits_1(tmp_path):
    """A broken file is named on stderr and fails the run; the rules that loaded are still converted on stdout."""
    shutil.copy(INVALID / "bare_not.yml", tmp_path)
    (tmp_path / "good.yml").write_text(rule_yaml("s:\n  gen_ai.prompt|contains: needle\ncondition: s", title="Good"))
    result = _run("convert", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"ERROR {tmp_path / 'bare_not.yml'}")
    assert "# Good (" in result.stdout and "needle" in result.stdout and "ERROR" not in result.stdout


def test_convert_of_nothing_exits_1(tmp_path):
    missing = _run("convert", str(tmp_path / "absent"))
    assert missing.exit_code == 1
    assert "the rules directory (or file) does not exist" in missing.stderr
    empty = _run("convert", str(tmp_path))
    assert empty.exit_code == 1 and empty.stdout == ""
    assert empty.stderr == "no rule converted to lucene\n"


def test_list_exits_1_when_a_file_does_not_load_and_still_lists_the_others(tmp_path):
    shutil.copy(INVALID / "bare_not.yml", tmp_path)
    (tmp_path / "good.yml").write_text(rule_yaml("s:\n  gen_ai.prompt|contains: x\ncondition: s", title="Good"))
    result = runner.invoke(cli, ["rules", "list", str(tmp_path)], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "Good" in result.output and "ERROR" in result.output
    assert result.output.strip().splitlines()[-1] == "1 rules loaded, 1 files with errors"


def test_a_rule_without_examples_fails_the_test_run_by_name(tmp_path):
    text = rule_yaml("s:\n  gen_ai.prompt|contains: x\ncondition: s", title="Untested", rule_id=OVERRIDE_ID)
    (tmp_path / "untested.yml").write_text(text.split("  tests:\n")[0], encoding="utf-8")
    result = _run("test", str(tmp_path))
    assert result.exit_code == 1
    untested = f"'Untested' ({OVERRIDE_ID}) [{tmp_path / 'untested.yml'}]: abusewatch.tests has no 'match' or 'nomatch'"
    assert f"FAIL {untested} example" in result.output
    assert "error: no test case ran: no rule has abusewatch.tests examples" in result.output
    assert result.output.strip().splitlines()[-1] == "0 passed, 1 failed"
    lint = _run("lint", str(tmp_path))
    assert "abusewatch.tests has no 'match' example" in lint.output  # the same words


def test_test_and_lint_of_no_rules_fail(tmp_path):
    (tmp_path / "notes.txt").write_text("not a rule")
    tested = _run("test", str(tmp_path))
    assert tested.exit_code == 1
    assert "error: no test case ran: no rules were loaded" in tested.output
    linted = _run("lint", str(tmp_path))
    assert linted.exit_code == 1
    assert linted.output.strip().splitlines() == [
        "error: nothing was linted: no rules were loaded",
        "0 rules, 1 errors, 0 warnings",
    ]
