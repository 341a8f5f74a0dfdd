"""Hot reload in the stream worker: changed signature rules, correlation rules and alert exceptions reach every
partition's stage and the templates later partitions are made from; what does not load leaves the running ones in
place."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import app.engine
from app.settings import Settings
from app.stream.reload import Changes, ExceptionsWatcher, Reloader
from app.stream.worker import StreamWorker
from detectors.alerting import AlertGrouper
from detectors.campaigns import CampaignCandidate, CampaignDetector, CampaignStage
from detectors.catalogue import known_rules, running_rules
from detectors.correlation import CorrelationDetector, CorrelationWatcher
from detectors.event import Event, Identity, Message
from detectors.exceptions import load_exceptions
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures import RuleSet, RuleSetWatcher, SignatureDetector
from tests.fixtures.rules.kit import rule_yaml

START = 1_790_000_000.0
ALPHA_RULE = "6f1f9a52-8a0e-4c59-9d55-0c1b2f3a4d01"
OMEGA_RULE = "6f1f9a52-8a0e-4c59-9d55-0c1b2f3a4d02"
CAMPAIGN_RULE = "abusewatch-anomaly-scraping-campaign"
STEADY_CORRELATION = "7a2e0c41-1d3b-4f5e-8a6c-2b9d0e1f3a01"
RETUNED_CORRELATION = "7a2e0c41-1d3b-4f5e-8a6c-2b9d0e1f3a02"
NAMED_CORRELATION = "7a2e0c41-1d3b-4f5e-8a6c-2b9d0e1f3a03"
_mtimes = itertools.count(1_000_000_000, 1_000_000_000)  # each write a second later: a change whatever the clock


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    stamp = next(_mtimes)
    os.utime(path, ns=(stamp, stamp))
    return path


def rule(word: str, rule_id: str) -> str:
    return rule_yaml(f"selection:\n  gen_ai.prompt|contains: {word}\ncondition: selection", rule_id=rule_id)


def correlation(rule_id: str, references: list[str], at_least: int) -> str:
    """An ``event_count`` correlation rule: ``at_least`` events of one identity within ten minutes."""
    return yaml.safe_dump(
        {
            "title": f"Correlation {rule_id[-2:]}",
            "id": rule_id,
            "status": "stable",
            "correlation": {
                "type": "event_count",
                "rules": references,
                "group-by": ["abusewatch.identity_key"],
                "timespan": "10m",
                "condition": {"gte": at_least},
            },
            "level": "high",
            "tags": ["atlas.aml.t0051.000", "owasp.llm01"],
            "abusewatch": {"category": "prompt_injection"},
        },
        sort_keys=False,
    )


def exception(rules: list[str], keys: list[str], entry_id: str = "known-job") -> dict:
    return {
        "id": entry_id,
        "rules": rules,
        "match": {"abusewatch.api_key_hash": keys},
        "reason": "sanctioned job",
        "expires": "2099-01-01",
    }


def write_exceptions(path: Path, *entries: dict) -> Path:
    return write(path, yaml.safe_dump(list(entries), sort_keys=False))


def prompt_event(number: int, text: str, key: str = "key-1") -> Event:
    return Event(
        id=f"e{number}",
        timestamp=START + number,
        dataset="test",
        identity=Identity(api_key_hash=key),
        input_messages=[Message(role="user", content=text)],
    )


def alerted(pipeline: Pipeline, event: Event) -> set[str]:
    return {alert["rule"]["id"] for alert in pipeline.process([event]).alerts}


def reload(reloader: Reloader) -> None:
    """As the worker's timer does, on one thread."""
    reloader.apply(reloader.load())


def reloads(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("abusewatch_reloads_total", {"kind": kind, "outcome": outcome}) or 0.0


def assert_rejected_once(
    reloader: Reloader, caplog: pytest.LogCaptureFixture, kind: str, path: Path, text: str
) -> None:
    """Writing the broken ``text`` to ``path`` is rejected at the next reload, counted once however often the same
    files are checked again, and logged with the file's name."""
    applied, rejected = reloads(kind, "applied"), reloads(kind, "rejected")
    write(path, text)
    with caplog.at_level(logging.ERROR):
        reload(reloader)
        reload(reloader)  # the same broken files: not loaded, nor counted, again
    assert (reloads(kind, "applied"), reloads(kind, "rejected")) == (applied, rejected + 1)
    label = {"rules": "rule", "correlations": "correlation rule"}[kind]
    assert f"{label} reload rejected" in caplog.text and path.name in caplog.text


def burst(keys: range, offset: float) -> list[CampaignCandidate]:
    """Three requests from each key on one template, in the window starting ``offset`` after START."""
    return [
        CampaignCandidate(
            event_id=f"c{offset:.0f}-{n}-{key}",
            timestamp=START + offset + 3 * n + key / 10,
            identity=Identity(api_key_hash=f"key-{key}"),
            signature="00ab",
        )
        for n in range(3)
        for key in keys
    ]


def campaign_alerts(stage: CampaignStage, offset: float) -> tuple[set[str], set[str]]:
    """Rule ids of the queue's and of the shadow alerts for one campaign burst, its window closed by a flush."""
    result = stage.process(burst(range(5), offset))
    result.extend(stage.flush(START + offset + 600))
    return {a["rule"]["id"] for a in result.alerts}, {a["rule"]["id"] for a in result.shadow_alerts}


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    write(directory / "alpha.yml", rule("alpha", ALPHA_RULE))
    return directory


@pytest.fixture
def correlations_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "correlations"
    directory.mkdir()
    return directory


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(b"reload-test")


@pytest.fixture
def rule_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every load of signature rule files from now on (the directories it was asked for)."""
    loads: list[object] = []
    load = RuleSet.load.__func__  # type: ignore[attr-defined]

    def counted(cls: type[RuleSet], directories: object, *args: object, **kwargs: object) -> RuleSet:
        loads.append(directories)
        return load(cls, directories, *args, **kwargs)

    monkeypatch.setattr(RuleSet, "load", classmethod(counted))
    return loads


def worker_settings(monkeypatch: pytest.MonkeyPatch, rules_dir: Path, exceptions_path: Path) -> Settings:
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.setenv("ABW_DETECTION__RULES_DIR", str(rules_dir))
    monkeypatch.setenv("ABW_DETECTION__EXCEPTIONS_PATH", str(exceptions_path))
    return Settings()


# -- rules --------------------------------------------------------------------------------------------------------


def test_a_new_rule_file_is_compiled_once_and_detected_by_every_partition(rules_dir: Path, redactor: Redactor) -> None:
    watcher = RuleSetWatcher([rules_dir])
    template = Pipeline([SignatureDetector(watcher)], redactor)
    partitions = [template.fresh(), template.fresh()]
    separate = Pipeline([SignatureDetector(RuleSet.load([rules_dir]))], redactor)  # a detector of its own
    reloader = Reloader(lambda: [template, *partitions, separate], rules=watcher)
    applied = reloads("rules", "applied")
    assert all(alerted(p, prompt_event(1, "say omega")) == set() for p in [*partitions, separate])

    reload(reloader)  # nothing changed yet
    assert reloads("rules", "applied") == applied
    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE))
    reload(reloader)

    assert reloads("rules", "applied") == applied + 1
    for number, pipeline in enumerate([*partitions, separate], start=2):
        assert alerted(pipeline, prompt_event(number, "say omega")) == {OMEGA_RULE}
        assert alerted(pipeline, prompt_event(number + 10, "say alpha")) == {ALPHA_RULE}
    rulesets = {id(d.ruleset) for p in [template, *partitions, separate] for d in p.detectors}
    assert rulesets == {id(watcher.current)}


def test_a_broken_rule_file_keeps_the_running_set_and_counts_rejected(
    rules_dir: Path, redactor: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    watcher = RuleSetWatcher([rules_dir])
    template = Pipeline([SignatureDetector(watcher)], redactor)
    partition = template.fresh()
    reloader = Reloader(lambda: [template, partition], rules=watcher)
    applied = reloads("rules", "applied")

    broken = rule("omega", OMEGA_RULE).replace("condition: selection", "condition: selection and")
    assert_rejected_once(reloader, caplog, "rules", rules_dir / "omega.yml", broken)
    assert alerted(partition, prompt_event(1, "alpha omega")) == {ALPHA_RULE}
    assert alerted(template.fresh(), prompt_event(2, "alpha omega")) == {ALPHA_RULE}

    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE))  # fixed: the next check takes it
    reload(reloader)
    assert reloads("rules", "applied") == applied + 1
    assert alerted(partition, prompt_event(3, "alpha omega")) == {ALPHA_RULE, OMEGA_RULE}


# -- correlation rules --------------------------------------------------------------------------------------------


def correlation_pipeline(rules_dir: Path, correlations_dir: Path, redactor: Redactor) -> Pipeline:
    rules = RuleSetWatcher([rules_dir])
    return Pipeline(
        [SignatureDetector(rules), CorrelationDetector(CorrelationWatcher([correlations_dir]), {})],
        redactor,
    )


def correlation_reloader(template: Pipeline, partitions: list[Pipeline]) -> Reloader:
    signatures, correlations = template.detectors
    assert isinstance(signatures, SignatureDetector) and isinstance(correlations, CorrelationDetector)
    return Reloader(lambda: [template, *partitions], rules=signatures.watcher, correlations=correlations.watcher)


def test_a_correlation_change_keeps_the_windows_of_unchanged_rules_and_restarts_changed_ones(
    rules_dir: Path, redactor: Redactor, correlations_dir: Path
) -> None:
    write(correlations_dir / "steady.yml", correlation(STEADY_CORRELATION, [ALPHA_RULE], 3))
    write(correlations_dir / "retuned.yml", correlation(RETUNED_CORRELATION, [ALPHA_RULE], 5))
    template = correlation_pipeline(rules_dir, correlations_dir, redactor)
    partition = template.fresh()
    reloader = correlation_reloader(template, [partition])
    applied = reloads("correlations", "applied")
    for number in (1, 2):  # two hits in each rule's window
        assert alerted(partition, prompt_event(number, "alpha")) == {ALPHA_RULE}

    write(correlations_dir / "retuned.yml", correlation(RETUNED_CORRELATION, [ALPHA_RULE], 2))
    reload(reloader)

    assert reloads("correlations", "applied") == applied + 1
    # The unchanged rule counts on from its two hits; the retuned one starts afresh, so one hit is not yet two.
    assert alerted(partition, prompt_event(3, "alpha")) & {STEADY_CORRELATION, RETUNED_CORRELATION} == {
        STEADY_CORRELATION
    }
    assert RETUNED_CORRELATION in alerted(partition, prompt_event(4, "alpha"))
    assert [c.info.id for c in template.fresh().detectors[1].correlations] == [  # type: ignore[attr-defined]
        RETUNED_CORRELATION,
        STEADY_CORRELATION,
    ]


def test_a_removed_correlation_rule_stops_and_its_windows_go(
    rules_dir: Path, redactor: Redactor, correlations_dir: Path
) -> None:
    write(correlations_dir / "steady.yml", correlation(STEADY_CORRELATION, [ALPHA_RULE], 2))
    template = correlation_pipeline(rules_dir, correlations_dir, redactor)
    partition = template.fresh()
    assert alerted(partition, prompt_event(1, "alpha")) == {ALPHA_RULE}
    assert partition.detectors[1].state()["groups"]  # type: ignore[attr-defined]

    (correlations_dir / "steady.yml").unlink()
    reload(correlation_reloader(template, [partition]))

    assert partition.detectors[1].state() == {"groups": []}  # type: ignore[attr-defined]
    assert STEADY_CORRELATION not in alerted(partition, prompt_event(2, "alpha"))


def test_a_broken_correlation_file_keeps_the_running_rules_and_their_windows(
    rules_dir: Path, redactor: Redactor, correlations_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(correlations_dir / "steady.yml", correlation(STEADY_CORRELATION, [ALPHA_RULE], 2))
    template = correlation_pipeline(rules_dir, correlations_dir, redactor)
    partition = template.fresh()
    reloader = correlation_reloader(template, [partition])
    assert alerted(partition, prompt_event(1, "alpha")) == {ALPHA_RULE}

    broken = correlation(RETUNED_CORRELATION, [ALPHA_RULE], 2).replace("event_count", "no_such_type")
    assert_rejected_once(reloader, caplog, "correlations", correlations_dir / "broken.yml", broken)
    assert STEADY_CORRELATION in alerted(partition, prompt_event(2, "alpha"))  # its first hit was kept


def test_a_new_signature_rule_name_resolves_in_correlations_after_a_rules_reload(
    rules_dir: Path, redactor: Redactor, correlations_dir: Path
) -> None:
    write(correlations_dir / "named.yml", correlation(NAMED_CORRELATION, ["omega_by_name"], 1))
    template = correlation_pipeline(rules_dir, correlations_dir, redactor)
    partition = template.fresh()
    reloader = correlation_reloader(template, [partition])

    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE) + "name: omega_by_name\n")
    reload(reloader)

    assert alerted(partition, prompt_event(1, "say omega")) == {OMEGA_RULE, NAMED_CORRELATION}
    assert partition.detectors[1].aliases == {"omega_by_name": OMEGA_RULE}  # type: ignore[attr-defined]


# -- exceptions ---------------------------------------------------------------------------------------------------


def test_an_exceptions_change_suppresses_what_alerted_in_running_stages(
    rules_dir: Path, redactor: Redactor, tmp_path: Path
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"]))
    running = load_exceptions(path)
    template = Pipeline([SignatureDetector(RuleSetWatcher([rules_dir]))], redactor, exceptions=running)
    partition = template.fresh()
    campaigns = CampaignStage(CampaignDetector(), AlertGrouper(redactor), running)
    reloader = Reloader(
        lambda: [template, partition, campaigns], exceptions=ExceptionsWatcher(path, lambda: load_exceptions(path))
    )
    applied = reloads("exceptions", "applied")
    assert alerted(partition, prompt_event(1, "alpha")) == {ALPHA_RULE}
    assert campaign_alerts(campaigns, 0.0) == ({CAMPAIGN_RULE}, set())

    write_exceptions(path, exception([ALPHA_RULE, CAMPAIGN_RULE], ["key-1", *(f"key-{k}" for k in range(5))]))
    reload(reloader)

    assert reloads("exceptions", "applied") == applied + 1
    result = partition.process([prompt_event(2, "alpha")])
    assert result.alerts == []
    assert [(a["rule"]["id"], a["abusewatch"]["exception"]["id"]) for a in result.shadow_alerts] == [
        (ALPHA_RULE, "known-job")
    ]
    assert campaign_alerts(campaigns, 900.0) == (set(), {CAMPAIGN_RULE})
    assert alerted(partition, prompt_event(3, "alpha", key="key-77")) == {ALPHA_RULE}  # not the excepted key


def test_a_broken_exceptions_file_keeps_the_running_ones_and_counts_rejected(
    rules_dir: Path, redactor: Redactor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-1"]))
    running = load_exceptions(path)
    template = Pipeline([SignatureDetector(RuleSetWatcher([rules_dir]))], redactor, exceptions=running)
    partition = template.fresh()
    reloader = Reloader(
        lambda: [template, partition], exceptions=ExceptionsWatcher(path, lambda: load_exceptions(path))
    )
    applied, rejected = reloads("exceptions", "applied"), reloads("exceptions", "rejected")

    write(path, yaml.safe_dump([{**exception([ALPHA_RULE], ["key-1"]), "expires": "someday"}]))
    with caplog.at_level(logging.ERROR):
        reload(reloader)
        reload(reloader)

    assert (reloads("exceptions", "applied"), reloads("exceptions", "rejected")) == (applied, rejected + 1)
    assert "alert exceptions reload rejected" in caplog.text and "expires" in caplog.text
    assert partition.exceptions is running and template.fresh().exceptions is running
    assert alerted(partition, prompt_event(1, "alpha")) == set()  # still suppressed

    path.unlink()  # gone: rejected too, the running ones stay
    reload(reloader)
    assert reloads("exceptions", "rejected") == rejected + 2
    assert partition.exceptions is running


def test_a_partition_made_after_a_reload_has_the_new_rules_and_exceptions(
    rules_dir: Path, redactor: Redactor, tmp_path: Path
) -> None:
    exceptions_dir = tmp_path / "exceptions"
    exceptions_dir.mkdir()
    write_exceptions(exceptions_dir / "first.yml", exception([ALPHA_RULE], ["key-9"]))
    watcher = RuleSetWatcher([rules_dir])
    template = Pipeline([SignatureDetector(watcher)], redactor, exceptions=load_exceptions(exceptions_dir))
    campaign_template = CampaignStage(CampaignDetector(), AlertGrouper(redactor), template.exceptions)
    reloader = Reloader(
        lambda: [template, campaign_template],
        rules=watcher,
        exceptions=ExceptionsWatcher(exceptions_dir, lambda: load_exceptions(exceptions_dir)),
    )

    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE))
    write_exceptions(exceptions_dir / "second.yml", exception([ALPHA_RULE, CAMPAIGN_RULE], ["key-1"], "second"))
    reload(reloader)

    later = template.fresh()
    result = later.process([prompt_event(1, "alpha omega")])
    assert {a["rule"]["id"] for a in result.alerts} == {OMEGA_RULE}
    assert [(a["rule"]["id"], a["abusewatch"]["exception"]["id"]) for a in result.shadow_alerts] == [
        (ALPHA_RULE, "second")
    ]
    assert [e.id for e in campaign_template.fresh().exceptions.exceptions] == ["known-job", "second"]


def test_loading_swaps_nothing_until_applied_and_a_partition_made_in_between_gets_the_changes(
    rules_dir: Path, redactor: Redactor, tmp_path: Path
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"]))
    running = load_exceptions(path)
    watcher = RuleSetWatcher([rules_dir])
    template = Pipeline([SignatureDetector(watcher)], redactor, exceptions=running)
    partitions = [template.fresh()]
    reloader = Reloader(
        lambda: [template, *partitions],
        rules=watcher,
        exceptions=ExceptionsWatcher(path, lambda: load_exceptions(path)),
    )
    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE))
    write_exceptions(path, exception([ALPHA_RULE], ["key-1"]))

    changes = reloader.load()  # the worker does this off the detector thread, while batches run
    assert changes.ruleset is watcher.current and changes.exceptions is not None
    assert alerted(partitions[0], prompt_event(1, "alpha omega")) == {ALPHA_RULE}
    partitions.append(template.fresh())  # a partition assigned meanwhile, from the template as it still was
    assert partitions[1].exceptions is running

    reloader.apply(changes)
    for number, partition in enumerate(partitions, start=2):
        assert partition.exceptions is changes.exceptions
        assert alerted(partition, prompt_event(number, "alpha omega")) == {OMEGA_RULE}
    assert reloader.load() == Changes()  # applied once: nothing left to load


# -- the worker ---------------------------------------------------------------------------------------------------


def test_the_worker_timer_reloads_into_every_stage_and_template(
    rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"]))
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.setenv("ABW_DETECTION__RULES_DIR", str(rules_dir))
    monkeypatch.setenv("ABW_DETECTION__EXCEPTIONS_PATH", str(path))
    worker = StreamWorker(Settings(), internal_partitions=2, op_types={})
    assert "reload" in {task.__name__ for task in worker.app._app_tasks}  # the timer (worker.reload_interval_s)
    identity = worker.identities.stages[1] = worker.identities.template.fresh()
    campaign = worker.campaigns_state.stages[0] = worker.campaigns_state.template.fresh()
    assert OMEGA_RULE not in alerted(identity, prompt_event(1, "say omega"))

    write(rules_dir / "omega.yml", rule("omega", OMEGA_RULE))
    write_exceptions(path, exception([ALPHA_RULE, "abusewatch-anomaly-scrapping-volume"], ["key-1"]))
    with caplog.at_level(logging.WARNING, logger="app.engine"):
        asyncio.run(worker.reload())

    assert OMEGA_RULE in alerted(identity, prompt_event(2, "say omega"))
    stages = [worker.identities.template, identity, worker.campaigns_state.template, campaign]
    assert {id(stage.exceptions) for stage in stages} == {id(identity.exceptions)}
    assert identity.exceptions.exceptions[0].entry.rules == [ALPHA_RULE, "abusewatch-anomaly-scrapping-volume"]
    assert "rule 'abusewatch-anomaly-scrapping-volume' matches no known rule" in caplog.text  # as at startup


def test_the_worker_loads_the_rule_files_once_and_checks_exceptions_against_the_loaded_rules(
    rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_loads: list[object]
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"]))
    settings = worker_settings(monkeypatch, rules_dir, path)
    worker = StreamWorker(settings, internal_partitions=2, op_types={})
    assert len(rule_loads) == 1  # the pipeline's own; the exceptions were checked against it

    write_exceptions(path, exception([ALPHA_RULE, "abusewatch-anomaly-scraping-*"], ["key-1"]))
    asyncio.run(worker.reload())
    assert len(rule_loads) == 1  # an exceptions reload loads no rule file
    assert worker.identities.template.exceptions.exceptions[0].entry.rules[1] == "abusewatch-anomaly-scraping-*"
    assert (
        running_rules(worker.identities.template.detectors)
        == known_rules(app.engine._rule_dirs(settings), app.engine._correlation_dirs(settings))[0]
    )


def test_exceptions_edited_while_the_worker_starts_are_loaded_at_the_first_check(
    rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"], "before"))
    load = app.engine.load_exceptions

    def load_then_edit(where: Path):  # an edit landing right after the worker read the file
        loaded = load(where)
        if loaded.exceptions[0].id == "before":
            write_exceptions(path, exception([ALPHA_RULE], ["key-9"], "during"))
        return loaded

    monkeypatch.setattr(app.engine, "load_exceptions", load_then_edit)
    worker = StreamWorker(worker_settings(monkeypatch, rules_dir, path), internal_partitions=1, op_types={})
    assert [e.id for e in worker.identities.template.exceptions.exceptions] == ["before"]

    asyncio.run(worker.reload())

    stages = [worker.identities.template, worker.campaigns_state.template]
    assert [[e.id for e in stage.exceptions.exceptions] for stage in stages] == [["during"], ["during"]]


def test_the_worker_timer_reloads_correlation_rules(
    rules_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_exceptions(tmp_path / "exceptions.yml", exception([ALPHA_RULE], ["key-9"]))
    worker = StreamWorker(worker_settings(monkeypatch, rules_dir, path), internal_partitions=1, op_types={})
    identity = worker.identities.stages[0] = worker.identities.template.fresh()
    applied = reloads("correlations", "applied")

    write(rules_dir / "named.yml", correlation(NAMED_CORRELATION, [ALPHA_RULE], 1))
    asyncio.run(worker.reload())

    assert reloads("correlations", "applied") == applied + 1
    assert NAMED_CORRELATION in alerted(identity, prompt_event(1, "alpha"))
    assert NAMED_CORRELATION in alerted(worker.identities.template.fresh(), prompt_event(2, "alpha"))


def test_a_reload_interval_of_zero_starts_no_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ABW_CONFIG", raising=False)
    monkeypatch.setenv("ABW_WORKER__RELOAD_INTERVAL_S", "0")
    worker = StreamWorker(Settings(), internal_partitions=1, op_types={})
    assert "reload" not in {task.__name__ for task in worker.app._app_tasks}
