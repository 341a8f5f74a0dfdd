"""The templated-enumeration rule: a short burst of one template filled with many distinct values alerts from an
identity's first window; heavy users, notebook loops with documents, classifiers with quoted payloads and
retry loops do not; the bundled sample scraper is caught; checkpoints taken mid-burst resume exactly."""

import json
import random
import string
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec
import pytest

from app.replay import decoded_lines
from app.traffic.samples import read_labels, sample_files
from detectors.anomaly import AnomalyConfig, AnomalyDetector
from detectors.anomaly.detector import STATE_VERSION
from detectors.anomaly.features import (
    MAX_ID_SLOT_CHARS,
    SLOT_BITS,
    context_tokens,
    distinct_estimate,
    is_record_id,
    prompt_shape,
    simhash,
    slot_bit,
    stable_hash,
)
from detectors.base import Detection, Findings
from detectors.campaigns import CampaignDetector, candidates_from_findings
from detectors.event import Event, Identity, Message, RetrievedDocument

ENUMERATION = "abusewatch-anomaly-scraping-enumeration"
WINDOW_START = 1_767_830_400.0  # aligned to the 10-minute windows
SYSTEM = "You are the shopping assistant of Example Outdoor Supplies. Answer briefly. " * 4
WORDS = (
    "invoice",
    "customer",
    "contract",
    "policy",
    "report",
    "budget",
    "forecast",
    "meeting",
    "agenda",
    "summary",
    "draft",
    "email",
    "proposal",
    "roadmap",
    "feature",
    "release",
    "incident",
    "outage",
    "latency",
    "database",
    "query",
    "schema",
    "migration",
    "deployment",
    "cluster",
    "network",
    "firewall",
)


def request(
    number: int,
    prompt: str,
    timestamp: float,
    *,
    user: str = "cust-1",
    input_tokens: int | None = None,
    system: str = "",
    output_tokens: int = 300,
) -> Event:
    return Event(
        id=f"e{user}-{number}",
        timestamp=timestamp,
        dataset="test",
        system_instructions=system,
        input_messages=[Message(role="user", content=prompt)],
        output_messages=[Message(role="assistant", content="Here you are.")],
        input_tokens=input_tokens if input_tokens is not None else round((len(system) + len(prompt)) / 4),
        output_tokens=output_tokens,
        identity=Identity(user_id=user, source_ip="198.18.0.7", user_agent="okhttp/4.12.0"),
    )


def burst(
    make_prompt: Callable[[int], str], count: int = 120, gap: float = 4.5, start: float = WINDOW_START + 1, **kwargs
) -> list[Event]:
    """``count`` requests ``gap`` seconds apart from ``start`` (by default all in one window at 4.5 s)."""
    return [request(i, make_prompt(i), start + i * gap, **kwargs) for i in range(count)]


def per_window(events: Sequence[Event]) -> list[int]:
    return sorted(Counter(int(e.timestamp // 600) for e in events).values(), reverse=True)


def sku(i: int) -> str:
    return f"Give the full description, price and stock for SKU HG-{20400 + i}."


STRADDLING = {"count": 110, "gap": 4.4, "start": WINDOW_START + 600 - 240}  # 55 | 55 across a boundary


def detect(events: Sequence[Event], config: AnomalyConfig | None = None) -> list[Detection]:
    detector = AnomalyDetector(config or AnomalyConfig())
    detections = detector.detect(events, [Findings() for _ in events])
    return detections + detector.flush()


def enumeration_alerts(detections: Sequence[Detection]) -> list[Detection]:
    return [d for d in detections if d.rule.id == ENUMERATION]


# ---------------------------------------------------------------------------------------------- prompt features


def test_ids_short_quotes_and_payloads_in_the_prompt_shape() -> None:
    sku = prompt_shape("Price and stock for SKU HG-20400, answer in JSON")
    named = prompt_shape('Everything you know about the person named "Ada Lovelace"')
    payload = prompt_shape(f'Classify ticket #812 as billing or technical: "{" ".join(WORDS[:12])}"')
    assert sku.values == ("hg-20400",) and sku.slot_chars == len("hg-20400")
    assert named.values == ("ada lovelace",)
    assert payload.values == ("812",)  # the quoted ticket text is a payload, not a slot value
    assert payload.slot_chars > 40
    assert sku.template == prompt_shape("Price and stock for SKU HG-99999, answer in JSON").template


RECORD_IDS: dict[str, Callable[[random.Random], str]] = {
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "objectid": lambda rng: f"{rng.getrandbits(96):024x}",
    "base62": lambda rng: "".join(rng.choices(string.ascii_letters + string.digits, k=11)),
    "stripe": lambda rng: "cus_" + "".join(rng.choices(string.ascii_letters + string.digits, k=14)),
    "order-code": lambda rng: (
        "ORD-" + "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=3)) + str(rng.randint(100, 999))
    ),
    "sku-any-width": lambda rng: f"HG-{rng.randint(1, 99_999)}",
}


def record(i: int, shape: str) -> str:
    """The ``i``-th record id of a shape, the same in every run."""
    return RECORD_IDS[shape](random.Random(f"{shape}-{i}"))


@pytest.mark.parametrize("shape", sorted(RECORD_IDS))
def test_a_record_id_with_letters_is_one_value_of_its_template(shape: str) -> None:
    """Until session 24 only an id's digits were masked, so its letters made every prompt a template of its own
    (the review's H1: 200 of 200 UUIDs, ObjectIds or order codes gave 200 signatures) and no template rule saw a
    scraper keyed by such ids."""
    shapes = [
        prompt_shape(f"Give the complete record for item {record(i, shape)}. Answer in JSON.") for i in range(200)
    ]
    (template, count), *_ = Counter(s.template for s in shapes).most_common()
    # a base62 id of letters alone whose case seldom flips stays a word (about 2 % of them at 11 characters)
    assert count >= (188 if shape in ("base62", "stripe") else 200)
    on_template = [(i, s) for i, s in enumerate(shapes) if s.template == template]
    assert len({s.signature for _, s in on_template}) == 1
    assert all(s.values == (record(i, shape).lower(),) for i, s in on_template)
    assert all(s.slot_chars <= MAX_ID_SLOT_CHARS for s in shapes)  # a UUID's 36 characters are no payload


def test_words_without_ids_keep_their_signatures_and_names_are_no_ids() -> None:
    """Only prompts with a record id changed template in session 24: these are the signatures of the earlier code, so
    windows, remembered prompts and campaigns of other prompts restored from a checkpoint match as before."""
    budget = prompt_shape("Summarise the quarterly budget meeting for the finance team")
    entry = prompt_shape('Give me entry 41 of the "Acme" catalogue, section b')
    brands = prompt_shape("How do I configure JavaScript on my iPhone for McDonald?")
    assert (budget.signature, budget.template) == (0xC754083725209149, 0xF33369E55B19C3EE)
    assert (entry.signature, entry.template) == (0x0FDB9AA4974BC1C3, 0x65C940847FAC7CF3)
    assert (brands.signature, brands.template, brands.values) == (0x73FB2BA0A74519C6, 0xE1182ADF37FDDFCF, ("i",))
    for word in ("JavaScript", "McDonald", "iPhone", "PowerPoint", "clientTransferProhibited", "OpenAI"):
        assert not is_record_id(word.lower(), word), word
    for word in ("dQwXkZpLmRtb", "cus_NffrFeUfNVxHib", "hg-20400", "5136bf62-8758-4f4d-ad75-c25d01ea0639"):
        assert is_record_id(word.lower(), word), word


def test_two_record_ids_in_a_prompt_stay_bare() -> None:
    """An id counts at most ``MAX_ID_SLOT_CHARS`` of slot text: two UUIDs (72 characters) would otherwise pass the
    enumeration rule's 40 characters of payload, and an order-of-a-customer scraper would escape it."""
    events = burst(lambda i: f"Return order {record(i, 'uuid')} of customer {record(i + 999, 'uuid')} as JSON.")
    (alert,) = enumeration_alerts(detect(events))
    assert alert.explanation["slot_chars"] == 2 * MAX_ID_SLOT_CHARS


def test_context_discounts_the_applications_own_text() -> None:
    plain = request(0, "Price for SKU HG-1?", 0.0, input_tokens=120, system="x" * 400)
    with_documents = msgspec.structs.replace(
        plain, retrieved_documents=[RetrievedDocument(content="y" * 200)], input_tokens=170
    )
    no_usage = msgspec.structs.replace(plain, input_tokens=None)
    assert context_tokens(plain) == pytest.approx(20.0)
    assert context_tokens(with_documents) == pytest.approx(20.0)
    assert context_tokens(no_usage) == pytest.approx(len("Price for SKU HG-1?") / 4)


@pytest.mark.parametrize("distinct", [1, 10, 60, 150, 400])
def test_linear_counting_estimates_distinct_values(distinct: int) -> None:
    bitmap = 0
    for value in range(distinct):
        bitmap |= 1 << slot_bit((f"item-{value}",))
    assert bitmap < 1 << SLOT_BITS
    assert distinct_estimate(bitmap) == pytest.approx(distinct, rel=0.15, abs=1)


# ---------------------------------------------------------------------------------------------- the rule


def test_a_new_identitys_sequential_sku_burst_alerts_in_its_first_window() -> None:
    events = burst(sku, system=SYSTEM)
    alerts = enumeration_alerts(detect(events))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.identity.key() == "user:cust-1" and alert.group_key == "anomaly:user:cust-1"
    assert alert.timestamp < WINDOW_START + 600  # the first window, no warm-up
    assert alert.rule.category == "scraping" and alert.rule.atlas and alert.rule.owasp == ("LLM10:2025",)
    assert alert.explanation["template_requests"] == 120
    assert alert.explanation["slot_distinct_share"] > 0.9
    assert alert.explanation["enumeration_rate"] > 0.9
    assert alert.explanation["context_tokens"] < 30  # the system prompt is the app's, not the client's
    assert alert.score == pytest.approx(120 / (120 + 60), abs=1e-6)  # above 0.5: well past the threshold


def test_shuffled_entities_in_quotes_alert_without_any_sequence() -> None:
    rng = random.Random(3)
    names = [f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}son {i}" for i in range(120)]
    events = burst(lambda i: f'Tell me everything about the person named "{names[i]}", employer included.')
    alerts = enumeration_alerts(detect(events))
    assert len(alerts) == 1
    assert alerts[0].explanation["enumeration_rate"] < 0.1


@pytest.mark.parametrize("decoys", [16, 40])
def test_a_scraper_opening_the_window_with_other_prompts_still_shows_its_template(decoys: int) -> None:
    """The window counts its templates in ``max_templates`` (16) Space-Saving counters. When the first 16 templates
    held the counters for good, a scraper opening each window with 16 different prompts hid its burst from the rule
    (docs/anomaly.md, "Known gaps", until session 17); now its template takes a counter back."""
    rng = random.Random(decoys)
    opening = [" ".join(rng.sample(WORDS, 6)) + " ?" for _ in range(decoys)]
    events = burst(lambda i: opening[i] if i < decoys else sku(i), count=decoys + 80, gap=3.0, system=SYSTEM)
    (alert,) = enumeration_alerts(detect(events))
    assert 80 <= alert.explanation["template_requests"] <= 80 + decoys // 16  # over-counted by at most n / 16
    assert alert.explanation["slot_distinct_share"] > 0.9


def test_a_benign_heavy_user_does_not_alert() -> None:
    """Short prompts with numbers, as fast as the burst: only the diversity of the prompts tells them apart."""
    rng = random.Random(5)

    def varied(i: int) -> str:
        words = rng.sample(WORDS, rng.randint(4, 9))
        return f"{' '.join(words)} {rng.randint(1, 500)} {rng.choice(WORDS)}?"

    events = burst(varied)
    assert detect(events) == []
    slotted = burst(lambda i: f"compare the budget report {i} with last year", count=120)
    assert enumeration_alerts(detect(slotted))  # the same rate and values on one template would alert


def ticket(i: int) -> str:
    return f'Classify ticket #{5000 + 3 * i} as billing or technical: "{" ".join(WORDS[i % 9 : i % 9 + 14])}"'


@pytest.mark.parametrize(
    ("make_prompt", "input_tokens"),
    [
        pytest.param(lambda i: f"Summarise document {i + 1} in three bullets", 1500, id="notebook-with-documents"),
        pytest.param(ticket, None, id="classifier-with-quoted-ticket-text"),
        pytest.param(lambda i: "Give the full description of SKU HG-20400", None, id="retry-loop"),
    ],
)
def test_templated_automation_that_sends_context_or_repeats_itself_does_not_alert(make_prompt, input_tokens) -> None:
    events = burst(make_prompt, input_tokens=input_tokens)
    assert enumeration_alerts(detect(events)) == []


def test_the_thresholds_are_configuration() -> None:
    events = burst(lambda i: f"Give the full description of SKU HG-{20400 + i}", count=80)
    assert enumeration_alerts(detect(events))
    assert enumeration_alerts(detect(events, AnomalyConfig(enumeration_min_requests=81))) == []
    assert enumeration_alerts(detect(events, AnomalyConfig(enumeration_max_context_tokens=5))) == []


def test_a_slower_burst_below_the_rate_does_not_alert() -> None:
    events = burst(lambda i: f"Give the full description of SKU HG-{20400 + i}", count=120, gap=12.0)
    assert max(sum(1 for e in events if w <= e.timestamp < w + 600) for w in (WINDOW_START, WINDOW_START + 600)) < 60
    assert enumeration_alerts(detect(events)) == []


def test_a_burst_cut_by_a_window_boundary_is_judged_across_both_windows() -> None:
    events = burst(sku, **STRADDLING)
    assert max(per_window(events)) < 60  # neither window alone reaches the threshold
    alerts = enumeration_alerts(detect(events))
    assert len(alerts) == 1
    explanation = alerts[0].explanation
    assert explanation["burst_windows"] == 2 and explanation["template_requests"] == 110
    assert explanation["burst_minutes"] < 10


@pytest.mark.parametrize(
    ("second_half", "input_tokens"),
    [
        pytest.param(lambda i: f"Write a limerick about the number {i}, please.", None, id="another-template"),
        pytest.param(lambda i: sku(55 + i), 1500, id="same-template-with-documents"),
    ],
)
def test_adjacent_windows_merge_only_for_one_template_without_context(second_half, input_tokens) -> None:
    first = burst(sku, count=55, gap=4.4, start=WINDOW_START + 600 - 240)
    second = burst(second_half, count=55, gap=4.4, start=WINDOW_START + 600 + 2, input_tokens=input_tokens)
    assert enumeration_alerts(detect(first + second)) == []
    assert enumeration_alerts(detect(first + burst(lambda i: sku(55 + i), count=55, gap=4.4, start=WINDOW_START + 602)))


def test_a_sustained_slow_rate_over_two_windows_is_not_a_burst() -> None:
    events = burst(sku, count=100, gap=11.5, start=WINDOW_START + 30)  # 52 | 48 over 19 minutes
    assert max(per_window(events)) < 60
    assert enumeration_alerts(detect(events)) == []


def test_the_bundled_sample_scraper_is_caught_and_nothing_else() -> None:
    files = sorted(str(path) for path in sample_files().values())
    events = [e for batch, _, _ in decoded_lines(files, max_bytes=4 << 20, max_text_chars=1 << 18) for e in batch]
    events.sort(key=lambda e: e.timestamp)
    labels = read_labels()
    scraper = {label["user"] for label in labels.values() if label["kind"] == "templated_scraping"}
    detections = detect(events)
    assert {d.identity.key() for d in detections} == scraper
    assert {d.rule.id for d in detections} == {ENUMERATION}
    assert all(labels[event_id]["kind"] == "templated_scraping" for event_id in detections[0].event_ids)


@pytest.mark.parametrize("shape", sorted(RECORD_IDS))
def test_a_burst_keyed_by_record_ids_with_letters_alerts_in_its_first_window(shape: str) -> None:
    """The review's S3b / S3c (an ObjectId or UUID scraper, 2,139 requests in 3 h, no alert): caught like a SKU
    scraper."""
    events = burst(lambda i: f"Give the complete product description for item {record(i, shape)}. Answer in JSON.")
    (alert,) = enumeration_alerts(detect(events))
    assert alert.timestamp < WINDOW_START + 600
    # a base62 id of letters alone whose case seldom flips is a word of its own (about 2 % of 11 characters)
    assert alert.explanation["template_requests"] >= 114 and alert.explanation["slot_distinct_share"] > 0.9


def test_a_campaign_keyed_by_object_ids_is_one_template_across_keys() -> None:
    """The review's S3e: 8 keys, 8 ObjectId requests each per window; every request had a signature of its own, so
    the campaign stage, which matches signatures exactly, saw 1,143 one-request templates."""
    rng = random.Random(11)
    events = []
    for key in range(8):
        for n in range(8):
            event = request(
                n, f"Price and stock level for item {rng.getrandbits(96):024x}", WINDOW_START + 60 * n + key
            )
            events.append(msgspec.structs.replace(event, id=f"k{key}-{n}", identity=Identity(api_key_hash=f"k{key}")))
    events.sort(key=lambda e: e.timestamp)
    findings = [Findings() for _ in events]
    AnomalyDetector().detect(events, findings)
    signatures = {f.fields["abusewatch.identity.template_signature"] for f in findings}
    assert len(signatures) == 1
    campaigns = CampaignDetector(AnomalyConfig())
    found = campaigns.detect(candidates_from_findings(events, findings)) + campaigns.flush()
    assert [d.rule.id for d in found] == ["abusewatch-anomaly-scraping-campaign"]


def earlier_shape(prompt: str) -> tuple[int, int]:
    """The signature and template hash the earlier masking (until session 24) gave a prompt of plain words and one id
    with letters: lower-cased, punctuation stripped, the id's digits zeroed (``hg-20400`` → ``hg-00000``)."""
    words = [word.strip(".,?") for word in prompt.lower().split()]
    words = ["".join("0" if c.isdigit() else c for c in word) for word in words]
    return simhash(words), stable_hash(" ".join(words))


def test_a_checkpoint_of_the_earlier_masking_resumes_on_the_new_templates() -> None:
    """A checkpoint taken before session 24 holds the earlier template of a prompt with an id in its open window, its
    burst record and its remembered prompts. Nothing converts them (a checkpoint keeps hashes, not words): they match
    no new prompt and age out. The window open at the restore is split between the two templates, so a burst there
    is judged again from the next window, and the first prompt of each such template after it is not a step."""
    events = burst(sku, count=160, gap=4.4, start=WINDOW_START + 600 - 300)  # 69 | 91 requests
    assert len(enumeration_alerts(detect(events))) == 2  # one alert a window, uninterrupted
    cut = 40  # in the first window
    first = AnomalyDetector()
    first.detect(events[:cut], [Findings() for _ in range(cut)])
    state = json.loads(json.dumps(first.state()))
    entity = state["entities"]["user:cust-1"]
    signature, template = earlier_shape(sku(0))
    window = entity["window"]
    assert len(window["templates"]) == len(window["slot_values"]) == 1
    window["templates"][0][0] = window["slot_values"][0][0] = f"{signature:016x}"
    entity["previous"][0] = f"{template:016x}"
    resumed = AnomalyDetector()
    resumed.load_state(state)
    findings = [Findings() for _ in events[cut:]]
    alerts = enumeration_alerts(resumed.detect(events[cut:], findings) + resumed.flush())
    assert [round(a.timestamp - WINDOW_START) for a in alerts] == [1000]  # 40 | 29 in the first: only the second
    steps = [f.fields["abusewatch.identity.enumeration"] for f in findings]
    assert steps[0] is False and all(steps[1:])


# ---------------------------------------------------------------------------------------------- state


@pytest.mark.parametrize("cut", [30, 56, 80])  # in the first window, just after the boundary, in the second
def test_a_checkpoint_taken_mid_burst_resumes_to_the_same_alerts(cut: int) -> None:
    names = burst(lambda i: f'Tell me about the person named "Person {i * 7 % 211}"', **STRADDLING)
    events = sorted(
        [*names, *burst(sku, count=80, start=WINDOW_START + 1210, user="cust-2")], key=lambda e: e.timestamp
    )
    reference = detect(events)
    assert len(enumeration_alerts(reference)) == 2
    first = AnomalyDetector()
    before = first.detect(events[:cut], [Findings() for _ in range(cut)])
    checkpoint = json.loads(json.dumps(first.state()))
    assert checkpoint["version"] == STATE_VERSION
    resumed = AnomalyDetector()
    resumed.load_state(checkpoint)
    after = resumed.detect(events[cut:], [Findings() for _ in events[cut:]]) + resumed.flush()
    encode = msgspec.json.encode
    assert [encode(d) for d in before + after] == [encode(d) for d in reference]
    assert json.loads(json.dumps(resumed.state())) == json.loads(json.dumps(_replayed_state(events)))


def _replayed_state(events: Sequence[Event]) -> dict:
    detector = AnomalyDetector()
    detector.detect(events, [Findings() for _ in events])
    detector.flush()
    return detector.state()


def test_a_checkpoint_of_the_previous_state_version_is_refused_clearly() -> None:
    detector = AnomalyDetector()
    detector.detect(burst(lambda i: f"SKU HG-{i}", count=5), [Findings() for _ in range(5)])
    old = {**detector.state(), "version": STATE_VERSION - 1}
    with pytest.raises(ValueError, match=rf"version {STATE_VERSION - 1} cannot be loaded.*version {STATE_VERSION}"):
        AnomalyDetector().load_state(old)


def test_hostile_digits_in_prompts_do_not_break_the_detector() -> None:
    prompts = ["item ²", "item ³", f"item {'9' * 1900}", f"item {'9' * 1899}8", "item ١", "item ٢"]
    events = [request(i, p, WINDOW_START + i) for i, p in enumerate(prompts)]
    findings = [Findings() for _ in events]
    assert AnomalyDetector().detect(events, findings) == []
    assert [f.fields["abusewatch.identity.enumeration"] for f in findings] == [False] * 5 + [True]
