"""Texts a client resends every turn are scanned once (detectors.exfil.context.ScanCache)."""

from __future__ import annotations

from msgspec.structs import replace

from detectors.base import Findings
from detectors.event import Event, Identity, Message, ToolDefinition
from detectors.exfil import ExfilDetector
from detectors.exfil.candidates import CandidateScanner, Hit
from detectors.exfil.context import ScanCache

KEY = "AKIAQ2RT5YW3PLK7MNB4"
DESCRIPTION = "Reads a file from the project workspace and returns its content. " * 12 + f"Use key {KEY} for S3."


class CountingScanner(CandidateScanner):
    def __init__(self, scanner: CandidateScanner) -> None:
        self.__dict__.update(scanner.__dict__)
        self.texts: list[str] = []

    def scan(self, text: str, families=None) -> list[Hit]:
        self.texts.append(text)
        return super().scan(text, families)


def agent_turn(n: int) -> Event:
    return Event(
        id=f"t{n}",
        timestamp=1_764_000_000.0 + n,
        dataset="test",
        input_messages=[Message(role="user", content=f"step {n}: list the files")],
        output_messages=[Message(role="assistant", content="Done.")],
        tool_definitions=[ToolDefinition(name="read_file", description=DESCRIPTION)],
        identity=Identity(user_id="dev", session_id="s1"),
        tools_shown=n > 0,
    )


def test_a_tool_description_resent_every_turn_is_scanned_once_and_still_masked_every_turn() -> None:
    detector = ExfilDetector()
    counting = CountingScanner(detector.scanner)
    detector.scanner = counting
    detector.scan_cache = ScanCache(counting)
    sensitive = []
    for n in range(5):
        found = Findings()
        detector.detect([agent_turn(n)], [found])
        sensitive.append({value.value for value in found.sensitive})
    assert counting.texts.count(DESCRIPTION) == 1
    assert all(KEY in values for values in sensitive)  # every turn's document masks it


def test_the_cache_gives_the_scanners_hits_and_stays_bounded() -> None:
    scanner = ExfilDetector().scanner
    cache = ScanCache(scanner, max_entries=2, min_chars=0)
    texts = [f"{DESCRIPTION} {n}" for n in range(3)]
    assert [cache.scan(text) for text in texts] == [scanner.scan(text) for text in texts]
    assert len(cache._entries) == 2
    short = ScanCache(scanner, min_chars=10_000)
    short.scan(texts[0])
    assert not short._entries  # short texts are scanned directly


def test_a_new_turn_is_never_served_from_the_cache() -> None:
    """The same text as this turn's prompt is scanned again: only resent fields go through the cache."""
    detector = ExfilDetector()
    counting = CountingScanner(detector.scanner)
    detector.scanner = counting
    detector.scan_cache = ScanCache(counting)
    event = replace(agent_turn(0), input_messages=[Message(role="user", content=DESCRIPTION)], tool_definitions=[])
    for n in range(3):
        detector.detect([replace(event, id=f"p{n}")], [Findings()])
    assert counting.texts.count(DESCRIPTION) == 3
