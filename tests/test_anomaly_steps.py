"""Enumeration steps across other prompts: each entity remembers the last prompt of a few templates, and the prompt
a far jump on a template left.

A step is a prompt one value past a remembered prompt of its template. When only the previous prompt was remembered,
a scraper that sent a cheap decoy request after each entry, or took two phrasings in turn, made no steps at all, and
escaped every rule that reads them (docs/anomaly.md, "What escapes it", until session 18); three or four phrasings,
two runs of ids taken in turn, or a decoy with a random id on the entries' template did so until session 19 ("More
evasions of the steps")."""

import json
from collections.abc import Sequence

import pytest

from bench.eval_slow_rests import START, resting_scraper
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.features import PromptShape, WindowAccumulator, prompt_shape, remember, steps_from_any
from detectors.anomaly.rules import SCRAPING_HARVEST
from detectors.base import Findings
from detectors.event import ANONYMOUS, Event, Identity, Message
from tests.test_anomaly_slow import detections, replay

# The earlier memory, nearly: the previous prompt, though a prompt without values no longer ends a run of steps.
ONE_TEMPLATE = AnomalyConfig(step_templates=1)


def marks(detector: AnomalyDetector, events: Sequence[Event]) -> dict[str, bool]:
    """Replay ``events`` in one batch; each one's ``abusewatch.identity.enumeration`` mark (whether it stepped)."""
    findings = [Findings() for _ in events]
    detector.detect(list(events), findings)
    return {e.id: bool(f.fields.get("abusewatch.identity.enumeration")) for e, f in zip(events, findings, strict=True)}


def steps_marked(events: Sequence[Event], config: AnomalyConfig | None = None) -> dict[str, bool]:
    return marks(AnomalyDetector(config), events)


def test_remember_keeps_the_last_prompt_of_each_recent_template_newest_first() -> None:
    item = [prompt_shape(f"Describe item {n} in detail") for n in range(1, 4)]
    page = prompt_shape("Open page 7 of the report")
    chat = prompt_shape("Thanks, that helps so much")  # no values: nothing can step from it
    recent = ()
    for shape in (item[0], page, item[1], chat):
        recent = remember(recent, shape, 3)
    assert recent == (item[1], page)  # item 2 replaced item 1; the chat took no place
    assert steps_from_any(recent, item[2]) and steps_from_any(recent, prompt_shape("Open page 8 of the report"))
    assert not steps_from_any(recent, prompt_shape("Describe item 5 in detail"))
    others = [prompt_shape(f"Question {n} about topic {word}") for n, word in enumerate(("alpha", "beta", "gamma"), 1)]
    for shape in others:
        recent = remember(recent, shape, 3)
    assert len(recent) == 3 and item[1] not in recent  # the oldest template made way


@pytest.mark.parametrize("evasion", ["decoy", "samedecoy", "alternate", "alternate3", "alternate4", "interleave2"])
def test_a_decoy_after_each_entry_or_alternating_phrasings_no_longer_hide_the_steps(evasion: str) -> None:
    events = resting_scraper(0, hours=1.0, evasion=evasion)
    entries = [e.id for e in events if e.id.startswith("slow-")]
    assert len(entries) >= 30
    marked = steps_marked(events)
    assert sum(marked[e] for e in entries) >= len(entries) - 4  # all but each phrasing's first step from its last
    assert not any(marked[e.id] for e in events if e.id.startswith("decoy-"))
    earlier = steps_marked(events, ONE_TEMPLATE)
    assert sum(earlier[e] for e in entries) <= 1  # what a memory of one prompt saw


def test_a_template_keeps_the_prompt_it_jumped_from_and_forgets_one_nearby() -> None:
    """Two runs of ids taken in turn on one template (41, 1041, 42, ...), or a decoy with a random id on it between
    entries: the prompt a far jump left is kept beside the template's last, so the run goes on stepping. A near
    value (a count, a rating, a retry) takes the last one's place, so it is judged against the previous alone."""
    first, other, then = (prompt_shape(f"Describe item {n} in detail") for n in (41, 1041, 42))
    recent = remember(remember((), first, 4), other, 4)
    assert recent == (other, first) and steps_from_any(recent, then)
    assert remember(recent, then, 4) == (then, other)  # never a third of one template: 41 made way
    near, far = (prompt_shape(f"Describe item {n} in detail") for n in (141, 142))  # 100 and 101 away
    assert remember((first,), near, 4) == (near,) and remember((first,), far, 4) == (far, first)
    assert remember((first,), far, 1) == (far,)  # one place (a shared key or IP): the previous prompt alone
    two_values = prompt_shape("Describe item 41 in detail 7")  # values that cannot be compared: far
    assert remember((first,), two_values, 4) == (two_values, first)
    assert remember((first,), first, 4) == (first,)  # a retry
    letters = [prompt_shape(f"Words starting with {c} please") for c in "az"]
    assert remember((letters[0],), letters[1], 4) == (letters[1],)
    named = [prompt_shape(f'Describe the product "{name}" in detail') for name in ("Kettle", "Lamp")]
    assert remember((named[0],), named[1], 4) == (named[1], named[0])  # another word: far


def test_the_prompts_far_jumps_left_make_way_before_any_template_does() -> None:
    """Four decoys with random ids between entries, two on each of two templates: each template's far prompt would
    take a place, but the templates' last prompts come first, so the entries' template stays, 2 places back."""
    entry = prompt_shape("Describe item 41 in detail")
    recent: tuple[PromptShape, ...] = (entry,)
    for decoy in ("Weather in zone 500", "Weather in zone 9000", "Invoice 300 total", "Invoice 7000 total"):
        recent = remember(recent, prompt_shape(decoy), 4)
    assert recent.index(entry) == 2 and len(recent) == 4
    assert steps_from_any(recent, prompt_shape("Describe item 42 in detail"))


@pytest.mark.parametrize(
    ("place", "step", "expected"),
    [
        (0, 2, True),
        (0, 3, False),
        (1, 2, True),
        (1, 3, False),
        (2, 3, True),
        (2, 4, False),
        (3, 4, True),
        (3, 5, False),
        (3, 1, True),
    ],
)
def test_a_step_may_be_longer_from_a_template_further_back(place: int, step: int, expected: bool) -> None:
    """``k`` + 1 phrasings taken in turn advance each by ``k`` + 1, and ``k`` other templates come between a
    phrasing's prompts: a step from ``k`` places back may be that long, and no longer."""
    others = [prompt_shape(p) for p in ("Open page 5 of the report", "Weather in zone 9", "Invoice 30 total")]
    recent = (*others[:place], prompt_shape("Describe item 40 in detail"))
    assert recent[place].values == ("40",)
    assert steps_from_any(recent, prompt_shape(f"Describe item {40 + step} in detail")) is expected


@pytest.mark.parametrize("evasion", ["decoy", "decoy3"])
def test_a_chunked_scraper_with_decoys_is_still_a_harvest(evasion: str) -> None:
    """5 minutes of work in every 50, one or three decoys a few seconds after each entry: its harvest counts the
    entries, and their own output tokens (the window's tokens times the steps' share, as counted before, fell under
    the rule's 25,000 with three cheap decoys an entry)."""
    events = resting_scraper(45, cycle_minutes=50, hours=30.0, evasion=evasion)
    harvest = [d for d in detections(events) if d.rule.id == SCRAPING_HARVEST.id]
    assert {d.identity.key() for d in harvest} == {"key:key-slow-0"}
    assert harvest[0].explanation["harvest.steps"] >= 40
    assert not [d for d in detections(events, ONE_TEMPLATE) if d.rule.id == SCRAPING_HARVEST.id]


@pytest.mark.parametrize("evasion", ["alternate", "interleave2"])
def test_the_templates_remembered_survive_a_checkpoint_and_one_of_the_earlier_code_loads(evasion: str) -> None:
    events = resting_scraper(45, cycle_minutes=50, hours=30.0, evasion=evasion)
    expected = [(d.rule.id, d.timestamp) for d in detections(events)]
    assert expected
    uninterrupted = steps_marked(events)
    cut = START + 8 * 3600.0 + 30  # inside a chunk: the next entry steps from the template before the cut
    before, after = [e for e in events if e.timestamp < cut], [e for e in events if e.timestamp >= cut]
    first = AnomalyDetector()
    found = replay(first, before)
    state = json.loads(json.dumps(first.state()))
    saved = state["entities"]["key:key-slow-0"]
    assert len(saved["earlier"]) == 1  # the other phrasing's or run's last entry, beside "previous" (earlier code's)
    resumed = AnomalyDetector()
    resumed.load_state(json.loads(json.dumps(state)))
    assert marks(resumed, after) == {e.id: uninterrupted[e.id] for e in after}  # every step, the first included
    resumed = AnomalyDetector()
    resumed.load_state(state)
    assert [(d.rule.id, d.timestamp) for d in [*found, *replay(resumed, after), *resumed.flush()]] == expected
    for data in state["entities"].values():  # a checkpoint of the earlier code: one prompt remembered
        data.pop("earlier", None)
    older = AnomalyDetector()
    older.load_state(json.loads(json.dumps(state)))
    older_marks = marks(older, after)
    missed = [e.id for e in after if uninterrupted[e.id] and not older_marks[e.id]]
    assert len(missed) == 1  # the other phrasing's next entry: its template is remembered again from then on
    older = AnomalyDetector()
    older.load_state(state)
    later = [*found, *replay(older, after), *older.flush()]
    assert {rule for rule, _ in expected} == {d.rule.id for d in later}


def window_steps(detector: AnomalyDetector, key: str) -> int:
    """Enumeration steps counted so far in the entity's open window."""
    return WindowAccumulator.load(detector.state()["entities"][key]["window"]).enumeration


@pytest.mark.parametrize("customers", [True, False, None])
def test_a_key_that_several_identities_share_steps_only_from_its_previous_prompt(customers: bool | None) -> None:
    """A shop app's key: customers press two buttons about their own, consecutive order numbers, interleaved. Joining
    one template's prompts across the other's would join different people's numbers, so the key judges a step
    against its previous prompt alone; the same prompts from a key used by no one else are one job's two templates.
    ``None``: no identity at all, so the anonymous entity, which pools everyone, judges them as a shared key does."""
    prompts = [p for n in range(100, 140) for p in (f"Track my order {n} please", f"Show the invoice for order {n}")]
    events = [
        Event(
            id=f"b{i}",
            timestamp=START + 5.0 * i,
            dataset="test",
            input_messages=[Message(role="user", content=prompt)],
            identity=Identity()
            if customers is None
            else Identity(user_id=f"customer-{i}" if customers else None, api_key_hash="app"),
        )
        for i, prompt in enumerate(prompts)
    ]
    detector = AnomalyDetector()
    detector.detect(events, [Findings() for _ in events])
    steps = window_steps(detector, ANONYMOUS if customers is None else "key:app")
    if customers is not False:
        assert steps == 0  # what remembering the previous prompt alone sees: no template twice in a row
    else:
        assert steps >= len(prompts) - 2  # each button's prompts step from that button's last one
