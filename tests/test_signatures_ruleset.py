"""Loading, rejection of what the engine cannot run, lint, rule examples, hot reload and the built-in pack."""

import os
import shutil
from pathlib import Path

import pytest

from detectors.signatures import BUILTIN_RULES_DIR, RuleSet, RuleSetWatcher, SignatureDetector, parse_rule
from detectors.signatures.parse import RuleLoadError
from detectors.signatures.ruleset import ReloadOutcome, rule_files
from tests.fixtures.rules.kit import INVALID, OVERRIDE_ID, VALID, rule_yaml


def _reject(text: str) -> str:
    ruleset = RuleSet.from_texts([text])
    assert ruleset.rules == []
    (error,) = ruleset.errors
    return str(error)


def test_valid_fixtures_load_and_compile():
    ruleset = RuleSet.load([VALID])
    assert ruleset.errors == []
    assert len(ruleset.rules) == len(rule_files([VALID])) == 5
    assert ruleset.compiled.pattern_count > len(ruleset.rules)


def test_bad_files_are_reported_and_the_good_rules_still_load(tmp_path):
    for path in [*VALID.glob("*.yml"), *INVALID.glob("*.yml")]:
        shutil.copy(path, tmp_path / path.name)
    ruleset = RuleSet.load([tmp_path])
    assert len(ruleset.rules) == 5
    messages = {Path(str(e.path)).name: str(e) for e in ruleset.errors}
    assert set(messages) == {p.name for p in INVALID.glob("*.yml")}
    assert "linear-time" in messages["backtracking_regex.yml"]
    assert "Fixture - backtracking-only regex" in messages["backtracking_regex.yml"]
    assert "c1384f72-a94d-4ffd-8b52-e353404c6cc7" in messages["backtracking_regex.yml"]
    assert "modifier 'cidr'" in messages["unsupported_modifier.yml"]
    assert "unsupported_modifier.yml:16:" in messages["unsupported_modifier.yml"]  # the line of the item
    assert "nothing matched" in messages["bare_not.yml"]
    assert "pipe syntax" in messages["aggregation.yml"]
    assert OVERRIDE_ID in {r.id for r in ruleset.rules}


@pytest.mark.parametrize(
    "detection,expected",
    [
        ("selection:\n  prompt|contains: x\ncondition: selection", "field 'prompt' is not a field"),
        ("selection:\n  gen_ai.prompt|windash: x\ncondition: selection", "modifier 'windash'"),
        ("selection:\n  gen_ai.prompt|re: 'a(?=b)'\ncondition: selection", "linear-time"),
        ("selection:\n  gen_ai.prompt: null\ncondition: selection", "not supported"),
        ("selection:\n  gen_ai.prompt|contains: '*'\ncondition: selection", "no literal text"),
        ("selection:\n  gen_ai.prompt|contains: x\ncondition: not selection", "nothing matched"),
        ("selection:\n  gen_ai.prompt|contains: x\ncondition: selection and missing", "invalid Sigma"),
    ],
)
def test_unsupported_constructs_are_rejected_with_a_message_naming_the_rule(detection, expected):
    message = _reject(rule_yaml(detection, title="Named rule", rule_id="00ff4a78-a61c-4348-a907-8f588500a39a"))
    assert expected in message
    assert "'Named rule' (00ff4a78-a61c-4348-a907-8f588500a39a)" in message


def test_product_block_is_required_and_category_checked():
    text = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    assert "category 'nonsense'" in _reject(text.replace("category: prompt_injection", "category: nonsense"))
    assert "abusewatch" in _reject(text.split("abusewatch:")[0])


def test_correlation_rules_are_left_to_the_correlation_detector():
    correlation = "title: c\nid: 0b872ee7-3ee0-4ad2-a4c0-e40b2e13369e\ncorrelation:\n  type: event_count\n"
    signature = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    ruleset = RuleSet.from_texts([correlation, signature])
    assert ruleset.errors == []
    assert [rule.title for rule in ruleset.rules] == ["Inline rule"]


def test_multi_document_files_are_rejected():
    one = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    assert "exactly one YAML mapping" in _reject(one + "---\n" + one)


def test_invalid_yaml_reports_the_line():
    with pytest.raises(RuleLoadError, match=r":3: .*invalid YAML"):
        parse_rule("title: x\nid: y\n\tdetection: tab\n", Path("broken.yml"))


def test_duplicate_ids_keep_the_first_rule():
    text = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection", rule_id=OVERRIDE_ID)
    ruleset = RuleSet.from_texts([text, text.replace("Inline rule", "Copy")])
    assert [r.title for r in ruleset.rules] == ["Inline rule"]
    assert "already used" in str(ruleset.errors[0])


def test_lint_flags_missing_tags_tests_and_duplicate_titles():
    base = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection", title="Same")
    untagged = rule_yaml("selection:\n  gen_ai.prompt|contains: y\ncondition: selection", title="Same")
    untagged = untagged.replace("  - atlas.aml.t0051.000\n  - owasp.llm01\n", "  - owasp.llm11\n")
    untested = rule_yaml("selection:\n  gen_ai.prompt|contains: z\ncondition: selection", title="Other")
    untested = untested.replace("  tests:\n    match: ['x']\n    nomatch: ['y']\n", "")
    issues = [str(issue) for issue in RuleSet.from_texts([base, untagged, untested]).lint()]
    assert any("no MITRE ATLAS tag" in issue for issue in issues)
    assert any("'llm11' is not owasp.llm01 .. owasp.llm10" in issue for issue in issues)
    assert any("no 'match' example" in issue for issue in issues)
    assert any("no 'nomatch' example" in issue for issue in issues)
    assert any("DuplicateTitle" in issue for issue in issues)


def test_lint_of_the_fixtures_is_clean():
    assert RuleSet.load([VALID]).lint() == []


def test_failing_examples_are_reported():
    text = rule_yaml("selection:\n  gen_ai.prompt|contains: needle\ncondition: selection")
    text = text.replace("match: ['x']", "match: ['needle here', 'no pin']")
    results = RuleSet.from_texts([text]).run_tests()
    assert [r.passed for r in results] == [True, False, True]
    assert "expected match, got no match" in results[1].describe()


def _write(path: Path, text: str, mtime: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime, mtime))


def test_hot_reload_swaps_on_change_and_keeps_the_running_set_on_a_broken_file(tmp_path):
    rule = rule_yaml("selection:\n  gen_ai.prompt|contains: alpha\ncondition: selection")
    _write(tmp_path / "rule.yml", rule, 1_000_000_000)
    watcher = RuleSetWatcher([tmp_path])
    detector = SignatureDetector(watcher)
    compiled = detector.ruleset.compiled
    assert compiled.match([("gen_ai.prompt", "alpha")]).hits

    _write(tmp_path / "rule.yml", rule.replace("alpha", "omega"), 2_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED
    detector.use_rules(watcher.current)  # what the worker's reloader does between batches (app/stream/reload.py)
    assert not detector.ruleset.compiled.match([("gen_ai.prompt", "alpha")]).hits
    assert detector.ruleset.compiled.match([("gen_ai.prompt", "omega")]).hits
    assert compiled.match([("gen_ai.prompt", "alpha")]).hits  # the old set is untouched

    _write(tmp_path / "broken.yml", rule.replace("condition: selection", "condition: selection and"), 3_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.REJECTED
    assert watcher.current.compiled.match([("gen_ai.prompt", "omega")]).hits
    assert watcher.last_errors

    (tmp_path / "broken.yml").unlink()
    _write(tmp_path / "second.yml", rule_yaml("s:\n  gen_ai.prompt|contains: beta\ncondition: s"), 4_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED
    detector.use_rules(watcher.current)
    assert len(detector.ruleset.rules) == 2


def test_watcher_says_whether_it_reloaded_found_nothing_or_rejected_the_change(tmp_path):
    rule = rule_yaml("selection:\n  gen_ai.prompt|contains: alpha\ncondition: selection")
    _write(tmp_path / "rule.yml", rule, 1_000_000_000)
    watcher = RuleSetWatcher([tmp_path])
    first = watcher.current
    assert watcher.maybe_reload() is ReloadOutcome.UNCHANGED

    _write(tmp_path / "broken.yml", rule.replace("condition: selection", "condition: selection and"), 2_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.REJECTED
    assert watcher.current is first and len(watcher.last_errors) == 1
    assert watcher.maybe_reload() is ReloadOutcome.UNCHANGED  # the same broken files: not loaded again
    assert len(watcher.last_errors) == 1

    (tmp_path / "broken.yml").unlink()
    _write(tmp_path / "rule.yml", rule.replace("alpha", "omega"), 3_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED
    assert watcher.current is not first and watcher.last_errors == []
    assert watcher.current.compiled.match([("gen_ai.prompt", "omega")]).hits


def test_builtin_pack_lints_and_passes_its_examples():
    files = rule_files([BUILTIN_RULES_DIR])
    ruleset = RuleSet.load([BUILTIN_RULES_DIR])
    assert [str(error) for error in ruleset.errors] == []
    if files:
        assert len(ruleset.rules) == len(files)
    assert [str(issue) for issue in ruleset.lint() if issue.severity == "error"] == []
    assert [result.describe() for result in ruleset.run_tests() if not result.passed] == []


def test_surrogate_pairs_in_values_reject_the_rule(monkeypatch):
    import yaml

    from detectors.signatures import parse

    monkeypatch.setattr(parse, "_LOADER", yaml.SafeLoader)  # the pure-Python loader lets surrogates through
    message = _reject(rule_yaml('selection:\n  gen_ai.prompt|contains: "\\uDB40\\uDC41"\ncondition: selection'))
    assert "lone surrogate" in message


def _prompt_rule(word: str, rule_id: str = OVERRIDE_ID, title: str = "Inline rule") -> str:
    return rule_yaml(f"s:\n  gen_ai.prompt|contains: {word}\ncondition: s", rule_id=rule_id, title=title)


def _matches(ruleset: RuleSet, word: str) -> bool:
    return bool(ruleset.compiled.match([("gen_ai.prompt", word)]).hits)


@pytest.mark.parametrize("order", ["later_dir_sorts_last", "later_dir_sorts_first"])
def test_a_rule_of_a_later_directory_overrides_an_earlier_ones_with_the_same_id(tmp_path, caplog, order):
    builtin, deployment = (
        (tmp_path / "a", tmp_path / "z") if order == "later_dir_sorts_last" else (tmp_path / "z", tmp_path / "a")
    )
    builtin.mkdir()
    deployment.mkdir()
    (builtin / "rule.yml").write_text(_prompt_rule("alpha"), encoding="utf-8")
    (builtin / "other.yml").write_text(_prompt_rule("gamma", rule_id="7f1c2d3e-0000-4000-8000-000000000001"))
    (deployment / "tuned.yml").write_text(_prompt_rule("omega"), encoding="utf-8")
    with caplog.at_level("WARNING", logger="detectors.signatures.ruleset"):
        ruleset = RuleSet.load([builtin, deployment])
    assert ruleset.errors == []
    assert sorted(rule.id for rule in ruleset.rules) == sorted([OVERRIDE_ID, "7f1c2d3e-0000-4000-8000-000000000001"])
    assert _matches(ruleset, "omega") and not _matches(ruleset, "alpha") and _matches(ruleset, "gamma")
    (warning,) = [record.getMessage() for record in caplog.records if "overrides" in record.getMessage()]
    assert str(deployment / "tuned.yml") in warning and str(builtin / "rule.yml") in warning


def test_an_id_used_twice_in_one_directory_is_an_error_that_keeps_the_running_rule(tmp_path):
    """A copy-pasted file that sorts first must not silently replace the running rule: the reload is rejected."""
    (tmp_path / "b.yml").write_text(_prompt_rule("alpha"), encoding="utf-8")
    watcher = RuleSetWatcher([tmp_path])
    _write(tmp_path / "a.yml", _prompt_rule("omega", title="Copy"), 2_000_000_000)
    _write(tmp_path / "c.yml", _prompt_rule("beta", rule_id="7f1c2d3e-0000-4000-8000-000000000002"), 2_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.REJECTED
    assert _matches(watcher.current, "alpha") and not _matches(watcher.current, "omega")
    (error,) = watcher.last_errors
    assert "b.yml" in str(error) and "already used by" in str(error) and "a.yml" in str(error)
    (tmp_path / "a.yml").unlink()
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED  # the copy removed: the new rule in c.yml goes live
    assert _matches(watcher.current, "alpha") and _matches(watcher.current, "beta")


def test_a_rule_that_does_not_compile_does_not_override_the_rule_it_would_replace(tmp_path):
    builtin, deployment = tmp_path / "builtin", tmp_path / "deployment"
    builtin.mkdir()
    deployment.mkdir()
    (builtin / "rule.yml").write_text(_prompt_rule("alpha"), encoding="utf-8")
    broken = _prompt_rule("omega").replace("gen_ai.prompt|contains: omega", "gen_ai.prompt|re: 'a(?=b)'")
    (deployment / "tuned.yml").write_text(broken, encoding="utf-8")
    ruleset = RuleSet.load([builtin, deployment])
    assert [rule.id for rule in ruleset.rules] == [OVERRIDE_ID] and _matches(ruleset, "alpha")
    (error,) = ruleset.errors
    assert "tuned.yml" in str(error)


def test_hidden_files_and_directories_under_a_rules_directory_are_not_rule_files(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("name: ci\non: [push]\njobs: {}\n", encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config.yaml").write_text("x: 1\n", encoding="utf-8")
    (tmp_path / ".draft.yml").write_text("not: a rule\n", encoding="utf-8")
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "rule.yml").write_text(_prompt_rule("alpha"), encoding="utf-8")
    assert rule_files([tmp_path]) == [tmp_path / "team" / "rule.yml"]
    watcher = RuleSetWatcher([tmp_path])
    assert watcher.last_errors == [] and len(watcher.current.rules) == 1


def test_rule_files_list_directories_in_the_order_given_and_a_file_once():
    first, second = sorted(VALID.glob("*.yml"))[:2]
    assert rule_files([second, VALID]) == [second, *[path for path in rule_files([VALID]) if path != second]]
    assert rule_files([VALID, first]) == rule_files([VALID])


MALFORMED = {
    "a date that does not exist": ("date: 2026-11-22", "date: 2026-13-01", "month must be in 1..12"),
    "a number as condition": ("condition: selection", "condition: 1", "detection.condition must be text"),
    "a number as id": (f"id: {OVERRIDE_ID}", "id: 1234", "'id' must be text, not 1234"),
    "a list as title": ("title: Inline rule", "title: [a, b]", "'title' must be text"),
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_file_is_an_error_naming_it_and_the_worker_starts_with_the_other_rules(tmp_path, change):
    old, new, reason = change
    good = _prompt_rule("alpha", rule_id="7f1c2d3e-0000-4000-8000-000000000003")
    (tmp_path / "good.yml").write_text(good, encoding="utf-8")
    bad = rule_yaml("selection:\n  gen_ai.prompt|contains: omega\ncondition: selection", rule_id=OVERRIDE_ID)
    assert old in bad
    (tmp_path / "bad.yml").write_text(bad.replace(old, new), encoding="utf-8")
    watcher = RuleSetWatcher([tmp_path])  # what a worker builds at start-up (docs/rules.md: skipped, with an error)
    assert _matches(watcher.current, "alpha") and not _matches(watcher.current, "omega")
    (error,) = watcher.last_errors
    assert str(tmp_path / "bad.yml") in str(error) and reason in str(error)
    assert any(str(tmp_path / "bad.yml") in issue.message for issue in watcher.current.lint())


def test_a_string_of_examples_is_an_error_not_one_example_per_character():
    text = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    message = _reject(text.replace("match: ['x']", "match: x y z"))
    assert "abusewatch.tests.match must be a list" in message


def test_a_file_of_correlation_documents_is_left_to_the_correlation_detector_and_reloads_go_on(tmp_path):
    """The shipped correlation file holds several documents; a copy in rules_dir must not hold back reloads."""
    from detectors.correlation import BUILTIN_DIR

    shutil.copy(BUILTIN_DIR / "identity_campaigns.yml", tmp_path / "campaigns.yml")
    _write(tmp_path / "rule.yml", _prompt_rule("alpha"), 1_000_000_000)
    watcher = RuleSetWatcher([tmp_path])
    assert watcher.last_errors == [] and len(watcher.current.rules) == 1
    _write(tmp_path / "rule.yml", _prompt_rule("omega"), 2_000_000_000)
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED
    assert _matches(watcher.current, "omega")


def test_a_signature_rule_beside_correlations_in_one_file_is_an_error_not_silently_skipped():
    correlation = "title: c\nid: 0b872ee7-3ee0-4ad2-a4c0-e40b2e13369e\ncorrelation:\n  type: event_count\n"
    signature = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    assert "must not hold other documents" in _reject(correlation + "---\n" + signature)


def _lint(text: str) -> list[str]:
    ruleset = RuleSet.from_texts([text])
    assert ruleset.errors == []
    return [str(issue) for issue in ruleset.lint()]


def test_lint_names_an_atlas_id_that_is_not_a_known_technique():
    text = rule_yaml("selection:\n  gen_ai.prompt|contains: x\ncondition: selection")
    known = text.replace("  - atlas.aml.t0051.000\n", "  - atlas.aml.t0051.000\n  - atlas.aml.t0054\n")
    assert not [issue for issue in _lint(known) if "ATLAS" in issue]
    unknown = text.replace("  - atlas.aml.t0051.000\n", "  - atlas.aml.t0051.000\n  - atlas.aml.t9999\n")
    (issue,) = [issue for issue in _lint(unknown) if "ATLAS" in issue]
    assert issue.startswith("error:") and "'aml.t9999' is not a MITRE ATLAS technique" in issue


FILTERED = (
    "selection:\n  gen_ai.prompt|contains: x\nfilter:\n  {field}|contains: y\ncondition: selection and not filter"
)


@pytest.mark.parametrize(
    "field,category,warned",
    [
        ("gen_ai.prompt", "prompt_injection", True),
        ("gen_ai.retrieval.documents.content", "jailbreak", True),
        ("gen_ai.tool.call.result", "system_prompt_leak", True),
        ("gen_ai.request.model", "prompt_injection", False),  # the application sets it, not the attacker
        ("gen_ai.prompt", "secret_exposure", False),
    ],
)
def test_lint_warns_of_a_filter_on_text_the_attacker_writes(field, category, warned):
    text = rule_yaml(FILTERED.format(field=field)).replace("category: prompt_injection", f"category: {category}")
    issues = [issue for issue in _lint(text) if "a filter on text the attacker writes is an evasion" in issue]
    assert len(issues) == warned
    assert all(issue.startswith("warning:") and field in issue for issue in issues)


def test_a_rules_directory_that_vanishes_is_a_rejected_reload_not_an_empty_set(tmp_path, caplog):
    rules = tmp_path / "rules"
    rules.mkdir()
    _write(rules / "rule.yml", _prompt_rule("alpha"), 1_000_000_000)
    watcher = RuleSetWatcher([rules])
    running = watcher.current
    rules.rename(tmp_path / "rules.old")  # an unmounted volume, a deploy that swaps the directory
    with caplog.at_level("ERROR", logger="detectors.signatures.ruleset"):
        assert watcher.maybe_reload() is ReloadOutcome.REJECTED
    assert watcher.current is running and _matches(watcher.current, "alpha")
    (error,) = watcher.last_errors
    assert str(rules) in str(error) and "does not exist" in str(error)
    assert any(
        "reload rejected" in record.getMessage() and str(rules) in record.getMessage() for record in caplog.records
    )
    (tmp_path / "rules.old").rename(rules)
    assert watcher.maybe_reload() is ReloadOutcome.RELOADED and watcher.last_errors == []


def test_a_vanished_directory_holds_back_correlation_reloads_too(tmp_path):
    from detectors.correlation import BUILTIN_DIR, CorrelationWatcher

    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(BUILTIN_DIR / "identity_campaigns.yml", rules / "campaigns.yml")
    watcher = CorrelationWatcher([rules])
    running = watcher.current
    assert running and watcher.last_errors == []
    shutil.rmtree(rules)
    assert watcher.maybe_reload() is ReloadOutcome.REJECTED
    assert watcher.current is running and len(watcher.last_errors) == 1


def test_loading_a_path_that_does_not_exist_is_an_error():
    ruleset = RuleSet.load([VALID, VALID / "no-such-directory"])
    assert len(ruleset.rules) == 5
    (error,) = ruleset.errors
    assert "no-such-directory" in str(error) and "does not exist" in str(error)
