"""Window features on hand-made event sequences: rates, template reuse, enumeration, bounded memory."""

import itertools
import math

import pytest

from detectors.anomaly.features import (
    FEATURES,
    Limits,
    WindowAccumulator,
    event_signals,
    hamming,
    is_enumeration_step,
    prompt_shape,
    refusal_matcher,
    simhash,
)
from detectors.event import Event, GuardrailVerdict, Identity, Message

LIMITS = Limits(templates=4, distinct=8, event_ids=5, window_seconds=600.0)
SMALL = Limits(templates=4, distinct=3, event_ids=5, window_seconds=600.0)
MATCHER = refusal_matcher()


def make_event(
    number: int,
    prompt: str,
    *,
    timestamp: float,
    params: dict | None = None,
    completion: str = "ok",
    ip: str = "203.0.113.1",
    tokens: tuple[int, int] = (10, 20),
    outcome: str = "success",
    blocked: bool = False,
) -> Event:
    return Event(
        id=f"e{number}",
        timestamp=timestamp,
        dataset="test",
        input_messages=[Message(role="user", content=prompt)],
        output_messages=[Message(role="assistant", content=completion)],
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        request_params=params or {},
        identity=Identity(api_key_hash="k1", source_ip=ip, user_agent="ua"),
        outcome=outcome,
        guardrails=[GuardrailVerdict(source="gw", action="blocked")] if blocked else [],
    )


def accumulate(events: list[Event]) -> dict[str, float]:
    window = WindowAccumulator(0.0)
    previous_shape, previous_ts = None, None
    for event in events:
        signals = event_signals(event, MATCHER, 2000)
        enumeration = signals.shape is not None and is_enumeration_step(previous_shape, signals.shape)
        window.add(signals, enumeration=enumeration, previous_ts=previous_ts, limits=LIMITS)
        previous_shape, previous_ts = signals.shape, event.timestamp
    features = window.features(3)
    assert set(features) == set(FEATURES)
    return features


def test_template_signature_ignores_numbers_quotes_and_single_letters() -> None:
    first = prompt_shape('Give me entry 41 of the "Acme" catalogue, section b')
    second = prompt_shape('Give me entry 42 of the "Globex Corp" catalogue, section c')
    other = prompt_shape("Summarise the quarterly budget meeting for the finance team")
    assert first.signature == second.signature and first.template == second.template
    assert first.values == ("41", "acme", "b") and second.values == ("42", "globex corp", "c")
    assert hamming(first.signature, other.signature) > 3


def test_simhash_of_near_duplicates_is_close() -> None:
    sentence = "please write a very detailed description of the product for our online shop today"
    words = sentence.split(" ")
    changed = [*words[:-1], "tomorrow"]
    assert hamming(simhash(words), simhash(changed)) < hamming(simhash(words), simhash(list(reversed(words))))


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("Describe item 41 in detail", "Describe item 42 in detail", True),
        ("Describe item 41 in detail", "Describe item 43 in detail", True),
        ("Describe item 41 in detail", "Describe item 141 in detail", False),
        ("Describe item 41 in detail", "Describe item 40 in detail", False),
        ("Words starting with a please", "Words starting with b please", True),
        ("Words starting with a please", "Words starting with d please", False),
        ("Describe item 41 in detail", "Summarise item 42 briefly", False),
        ("Describe item 41 and 7", "Describe item 42 and 8", False),
        ("Price of SKU HG-20400?", "Price of SKU HG-20401?", True),
        ("Price of SKU HG-20400?", "Price of SKU HX-20401?", False),
        ("Price of SKU HG-20400?", "Price of SKU HG-20499?", False),
        ("Record 2024-01-05 please", "Record 2024-01-06 please", True),
        ("Describe item ² in detail", "Describe item ³ in detail", False),  # str.isdigit, but int() refuses
        (f"Account {'9' * 30} now", f"Account 1{'0' * 30} now", False),  # too long to be an enumerated id
    ],
)
def test_enumeration_step(before: str, after: str, expected: bool) -> None:
    assert is_enumeration_step(prompt_shape(before), prompt_shape(after)) is expected


def test_regular_enumerating_bot_window() -> None:
    events = [make_event(i, f"Describe catalogue item {100 + i} in full", timestamp=6.0 * i) for i in range(10)]
    features = accumulate(events)
    assert features["requests"] == 10
    assert features["tokens"] == 300 and features["tokens_per_request"] == 30
    assert features["output_input_ratio"] == 2.0
    assert features["template_reuse"] == 1.0
    assert features["prompt_diversity"] == pytest.approx(0.1)
    assert features["enumeration_rate"] == pytest.approx(0.9)
    assert features["interarrival_cv"] == pytest.approx(0.0, abs=1e-9)


def test_human_like_window_is_irregular_and_diverse() -> None:
    prompts = [
        "Summarise this invoice for the finance team",
        "Write a haiku about kubernetes outages",
        "How do I configure the firewall for remote access?",
        "Translate the onboarding checklist to German",
    ]
    times = [0.0, 5.0, 200.0, 210.0]
    features = accumulate([make_event(i, p, timestamp=t) for i, (p, t) in enumerate(zip(prompts, times, strict=True))])
    assert features["template_reuse"] == 0.25
    assert features["enumeration_rate"] == 0.0
    assert features["interarrival_cv"] > 1.0


def test_extraction_refusal_error_and_guardrail_rates() -> None:
    sweep = (0.0, 0.5, 1.0, 1.5)
    events = [
        make_event(
            i,
            f"Classify probe {i}",
            timestamp=float(i),
            params={"logprobs": True, "top_logprobs": 20, "temperature": sweep[i % 4]},
            completion="I'm sorry, but I can't help with that." if i % 2 else "positive",
            outcome="failure" if i == 0 else "success",
            blocked=i == 1,
        )
        for i in range(8)
    ]
    features = accumulate(events)
    assert features["extraction_param_rate"] == 1.0
    assert features["extraction_distinct_temperatures"] == 4
    assert features["extraction_temperature_std"] == pytest.approx(math.sqrt(0.3125))
    assert features["refusal_rate"] == 0.5
    assert features["error_rate"] == 0.125 and features["guardrail_block_rate"] == 0.125


def test_several_choices_count_as_extraction_but_plain_requests_do_not() -> None:
    features = accumulate(
        [
            make_event(0, "a question here", timestamp=0.0, params={"n": 5}),
            make_event(1, "a question there", timestamp=1.0, params={"n": 1, "temperature": 0.7}),
        ]
    )
    assert features["extraction_param_rate"] == 0.5
    assert features["extraction_distinct_temperatures"] == 0


def test_accumulator_memory_is_capped() -> None:
    events = [
        make_event(
            i, " ".join(f"word{chr(97 + (i * j) % 26)}x" for j in range(12)), timestamp=float(i), ip=f"10.0.0.{i}"
        )
        for i in range(200)
    ]
    window = WindowAccumulator(0.0)
    for event in events:
        window.add(event_signals(event, MATCHER, 2000), enumeration=False, previous_ts=None, limits=SMALL)
    assert len(window.templates) <= SMALL.templates
    assert len(window.ips) == SMALL.distinct
    assert len(window.event_ids) == SMALL.event_ids
    assert window.requests == 200
    distinct = len({event.input_messages[0].content for event in events})  # 26: i and i + 26 write the same prompt
    assert window.features(3)["prompt_diversity"] == pytest.approx(distinct / 200, rel=0.15)


TOPICS = ("invoice", "contract", "budget", "roadmap", "incident", "schema", "firewall", "forecast", "agenda", "policy")


@pytest.mark.parametrize(("templates", "rounds"), [(3, 10), (12, 5)])
def test_prompt_diversity_is_the_share_of_distinct_templates_when_the_counters_are_reused(
    templates: int, rounds: int
) -> None:
    """4 counters (``SMALL``) and more templates than that, taken in turn: every prompt of a template that lost its
    counter takes one back (Space-Saving), yet diversity stays distinct templates per prompt, estimated; with no
    more templates than counters it is exact."""
    # words of letters alone: a word with a digit is a record id, masked whole (one template for them all)
    prompts = [
        " ".join(f"{TOPICS[(t + k) % len(TOPICS)]}{chr(97 + t)}{chr(97 + k)}" for k in range(8))
        for t in range(templates)
    ]
    window = WindowAccumulator(0.0)
    for index in range(templates * rounds):
        event = make_event(index, prompts[index % templates], timestamp=float(index))
        window.add(event_signals(event, MATCHER, 2000), enumeration=False, previous_ts=None, limits=SMALL)
    diversity = window.features(3)["prompt_diversity"]
    if templates <= SMALL.templates:
        assert window.template_evictions == 0 and diversity == templates / (templates * rounds)
    else:
        assert window.template_evictions > 0
        assert diversity == pytest.approx(templates / (templates * rounds), rel=0.15)  # linear counting's error
    restored = WindowAccumulator.load(window.dump())
    assert restored.features(3)["prompt_diversity"] == diversity


def test_malformed_parameters_and_empty_events_do_not_break_features() -> None:
    odd = Event(
        id="odd",
        timestamp=1.0,
        dataset="test",
        request_params={"temperature": "hot", "n": float("nan"), "logprobs": "5", "max_tokens": -3},
        input_tokens=-10,
    )
    signals = event_signals(odd, MATCHER, 2000)
    assert signals.shape is None and signals.temperature is None
    assert signals.extraction is True  # logprobs "5" as a string still asks for log-probabilities
    assert signals.input_tokens == 0 and signals.max_tokens == 0.0
    assert accumulate([odd])["requests"] == 1


def window_after(previous_ts: float, times: list[float]) -> WindowAccumulator:
    """The window starting at 1,800 s with requests at ``times``, the entity's previous one at ``previous_ts``."""
    window = WindowAccumulator(1800.0)
    for i, timestamp in enumerate(times):
        event = make_event(i, f"Describe catalogue item {i} in full", timestamp=timestamp)
        window.add(event_signals(event, MATCHER, 2000), enumeration=True, previous_ts=previous_ts, limits=LIMITS)
        previous_ts = timestamp
    return window


@pytest.mark.parametrize("previous_ts", [1100.0, 1199.0])  # a whole empty window (1,200-1,800 s) in the gap
def test_a_gap_over_a_whole_empty_window_is_a_rest_left_out_of_the_cv_without_rests(previous_ts: float) -> None:
    times = [1810.0, 1860.0, 1905.0, 1960.0, 2008.0]
    window = window_after(previous_ts, times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    expected = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
    assert (window.gaps.n, window.work_gaps.n) == (len(times), len(times) - 1)  # the rest counted in gaps only
    assert window.interarrival_cv_without_rest() == pytest.approx(expected)
    assert window.features(3)["interarrival_cv"] > 1.0  # the features keep it: one 600-s gap among ~50-s ones
    restored = WindowAccumulator.load(window.dump())
    assert restored.interarrival_cv_without_rest() == window.interarrival_cv_without_rest()


def test_a_gap_from_the_window_before_is_no_rest() -> None:
    window = window_after(1500.0, [1810.0, 1860.0, 1905.0, 1960.0])
    assert window.work_gaps.n == window.gaps.n == 4
    assert window.interarrival_cv_without_rest() == window.features(3)["interarrival_cv"] > 0.5


def test_too_few_gaps_without_the_rest_show_no_regularity() -> None:
    window = window_after(600.0, [1810.0, 1860.0, 1910.0])  # three gaps, the rest one of them
    assert window.features(3)["interarrival_cv"] == pytest.approx(math.sqrt(2.0) * 550.0 / 700.0)  # 600, 50, 50
    assert window.interarrival_cv_without_rest() == 1.0  # two gaps left: no regularity shown, as for any window


@pytest.mark.parametrize("burst", [10, 20, 299])
def test_a_burst_at_one_timestamp_after_a_rest_shows_no_regularity(burst: int) -> None:
    """All work gaps 0 (requests stamped in whole seconds, or late ones clamped): a CV of 1.0, as without a rest.
    Subtracting the rest from the moments instead cancelled catastrophically (CV 0.0 or 3e8)."""
    window = window_after(600.0, [1810.0] * burst)
    assert window.interarrival_cv_without_rest() == 1.0
    assert window_after(1500.0, [1810.0] * burst).features(3)["interarrival_cv"] > 1.0  # the 310-s gap among zeros


def test_a_window_of_an_earlier_checkpoint_loads_without_a_rest() -> None:
    data = window_after(600.0, [1810.0, 1860.0, 1905.0, 1960.0, 2008.0]).dump()
    del data["work_gaps"]
    window = WindowAccumulator.load(data)
    assert window.work_gaps.n == window.gaps.n
    assert window.interarrival_cv_without_rest() == window.features(3)["interarrival_cv"]


def test_accumulator_dump_round_trip() -> None:
    window = WindowAccumulator(600.0)
    for i in range(5):
        event = make_event(
            i, f"Describe catalogue item {i} in full", timestamp=600.0 + i, params={"temperature": i / 4}
        )
        window.add(event_signals(event, MATCHER, 2000), enumeration=True, previous_ts=600.0 + i - 1, limits=LIMITS)
    restored = WindowAccumulator.load(window.dump())
    assert restored.features(3) == window.features(3)
    assert restored.dump() == window.dump()


@pytest.mark.parametrize(
    ("completion", "refused"),
    [
        ("I'm sorry, but I can't share that.", True),
        ("I’m sorry, but I can’t share that.", True),
        ("I CANNOT ASSIST WITH that request", True),
        ("Sorry for the delay, here is the table you asked for.", False),
        ("", False),
    ],
)
def test_refusals_are_recognised_without_regular_expressions_on_the_text(completion: str, refused: bool) -> None:
    event = make_event(0, "question", timestamp=0.0, completion=completion)
    assert event_signals(event, MATCHER, 2000).refused is refused
