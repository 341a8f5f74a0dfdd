"""The anomaly evaluation's own traffic: short scraper bursts and templated automation, labelled by the identities
their normalised logs carry, reproducible per seed, and scored by ``run_seed`` on a small simulation."""

from collections import Counter

from app.traffic.simulate import ATTACK_KINDS, DEFAULT_START, SimulationConfig
from bench.eval_anomaly import (
    ALNUM_IDS,
    AUTOMATION_KINDS,
    DAY_ATTACKS,
    ROTATING_USERS,
    SHORT_SCRAPER,
    SHORT_SCRAPER_ALNUM,
    THIN_CAMPAIGN,
    run_seed,
    templated_traffic,
)
from bench.eval_grouping import identity_names
from detectors.anomaly import AnomalyConfig
from detectors.anomaly.features import prompt_shape, prompt_text

END = DEFAULT_START + 12 * 3600


def test_templated_traffic_is_reproducible_and_labelled_by_logged_identities() -> None:
    first = templated_traffic(4, DEFAULT_START, END, short_scrapers=3)
    again = templated_traffic(4, DEFAULT_START, END, short_scrapers=3)
    assert [(e.timestamp, e.identity.key(), e.input_messages[0].content) for e in first.events] == [
        (e.timestamp, e.identity.key(), e.input_messages[0].content) for e in again.events
    ]
    per_identity = Counter(e.identity.key() for e in first.events)
    kinds = Counter(label.kind for label in first.labels)
    assert kinds[SHORT_SCRAPER] + kinds[SHORT_SCRAPER_ALNUM] == 3
    assert kinds[ROTATING_USERS] == 1 and 30 <= kinds[THIN_CAMPAIGN] <= 45
    assert set(kinds) <= {SHORT_SCRAPER, SHORT_SCRAPER_ALNUM, THIN_CAMPAIGN, ROTATING_USERS, *DAY_ATTACKS}
    assert all(kinds[kind] == 1 for kind in DAY_ATTACKS)
    for label in first.labels:
        assert DEFAULT_START + 4 * 3600 <= label.start < label.end <= END
        if label.kind in (SHORT_SCRAPER, SHORT_SCRAPER_ALNUM):
            assert 100 <= per_identity[label.identity] <= 300
        if label.kind == THIN_CAMPAIGN:  # two requests in every 10-minute window of its campaign
            windows = Counter(int(e.timestamp // 600) for e in first.events if e.identity.key() == label.identity)
            assert set(windows.values()) == {2}
    (label,) = [label for label in first.labels if label.kind == ROTATING_USERS]
    rotating = [e for e in first.events if label.identity in identity_names(e.identity)]
    assert len({e.identity.user_id for e in rotating}) == len(rotating)
    assert len(rotating) > 400, "a request every 3-8 s for at least an hour"
    automation_identities = {e.identity.key() for e in first.events if e.identity.key() in first.automation}
    assert {first.automation[key] for key in automation_identities} == set(AUTOMATION_KINDS)
    automation_events = [e for e in first.events if (e.identity.user_agent or "").startswith("batch-worker/")]
    assert automation_events and all(identity_names(e.identity) & first.automation.keys() for e in automation_events)


def test_half_the_id_lists_are_record_ids_with_letters_drawn_apart_from_the_rest() -> None:
    """Session 24 (the review's H1): the short scrapers' and the catalogue generator's ids are UUIDs, ObjectIds,
    base62, Stripe-style or order codes in half the lists, drawn from a generator of their own, so the rest of the
    traffic (times, prompts, every other identity) is the traffic of earlier sessions."""
    traffic = templated_traffic(0, DEFAULT_START, END, short_scrapers=8)
    alnum = [label.identity for label in traffic.labels if label.kind == SHORT_SCRAPER_ALNUM]
    assert alnum, "no short scraper keyed by record ids with letters"
    for identity in alnum:
        prompts = [prompt_text(e) for e in traffic.events if e.identity.key() == identity]
        values = [prompt_shape(p).values for p in prompts]
        assert len(set(prompts)) == len(prompts)
        # one id a prompt, with letters (a Stripe or base62 id of letters alone may be taken for a word: a few %)
        assert sum(len(v) == 1 and any(c.isalpha() for c in v[0]) for v in values) >= 0.9 * len(prompts)
    lists = [traffic.ids(50) for _ in range(200)]
    shapes = Counter(shape for _, shape in lists)
    assert 70 <= shapes["numeric"] <= 130 and set(shapes) == {"numeric", *ALNUM_IDS}
    assert all(len(set(ids)) == 50 for ids, _ in lists)


def test_run_seed_scores_short_bursts_and_templated_automation() -> None:
    traffic = SimulationConfig(hours=12, benign_users=20, attackers=dict.fromkeys(ATTACK_KINDS, 0))
    result = run_seed(3, traffic, AnomalyConfig(peer_warmup_windows=50), short_scrapers=2)
    assert len(result.detected[SHORT_SCRAPER]) == len(result.detected[SHORT_SCRAPER_ALNUM]) == 1
    for kind in (SHORT_SCRAPER, SHORT_SCRAPER_ALNUM):  # a UUID, ObjectId ... scraper was missed until session 24
        assert all(delay is not None and delay < 30 * 60 for delay in result.detected[kind])
    assert set(result.automation) == set(AUTOMATION_KINDS)
    enumeration = "abusewatch-anomaly-scraping-enumeration"
    assert enumeration in result.automation_rules["catalogue_generator"]  # the trade-off, by design
    assert enumeration not in result.automation_rules["bulk_classifier"]
    assert enumeration not in result.automation_rules["bulk_summariser"]
    # the campaign spread thin, found by the distributed-enumeration rule (in shadow by default), which an app's
    # templated button for many customers raises too (by design); the rotating key's own windows catch it here
    spread = "abusewatch-anomaly-scraping-campaign-enumeration"
    assert result.detected[THIN_CAMPAIGN] and all(delay is not None for delay in result.detected[THIN_CAMPAIGN])
    assert set(result.first_rules[THIN_CAMPAIGN]) == {spread}
    assert all(delay is not None for delay in result.detected[ROTATING_USERS])
    assert spread in result.automation_rules["app_action"]
    assert spread not in result.automation_rules["bulk_classifier"]
    # a ticket classifier asking for log-probabilities, walking its ids with each ticket's text: no extraction (M7)
    assert "abusewatch-anomaly-model-extraction" not in result.automation_rules["logprob_classifier"]


def test_the_logprob_classifier_walks_ids_with_logprobs_and_the_ticket_text() -> None:
    traffic = templated_traffic(4, DEFAULT_START, END, short_scrapers=0)
    names = {name for name, kind in traffic.automation.items() if kind == "logprob_classifier"}
    events = [e for e in traffic.events if identity_names(e.identity) & names]
    assert len(events) > 150  # two hours, a request every 20-40 s
    assert all(e.request_params.get("top_logprobs") == 5 and e.request_params.get("temperature") == 0 for e in events)
    shapes = [prompt_shape(prompt_text(e)) for e in events]
    assert len({s.template for s in shapes}) == 1
    assert sum(s.slot_chars for s in shapes) / len(shapes) > 40  # not bare: the ticket's text, quoted


def test_the_day_scale_traffic_stays_under_every_window_threshold() -> None:
    """Session 24 (the review's H3, H4): attackers and benign heavy users that only a day's sums can tell apart."""
    config = AnomalyConfig()
    traffic = templated_traffic(1, DEFAULT_START, DEFAULT_START + 36 * 3600, short_scrapers=0)
    labels = {label.kind: label for label in traffic.labels if label.kind in DAY_ATTACKS}
    for kind, label in labels.items():
        events = [e for e in traffic.events if e.identity.key() == label.identity]
        windows = Counter(int(e.timestamp // 600) for e in events)
        tokens = Counter()
        for event in events:
            tokens[int(event.timestamp // 600)] += event.input_tokens + event.output_tokens
        assert max(windows.values()) < config.volume_min_requests, kind
        assert max(tokens.values()) < config.tokens_min, kind
        assert (label.end - label.start) / 3600 > 15
    topk = [e for e in traffic.events if e.identity.key() == labels["logprob_distiller"].identity]
    assert {e.request_params.get("temperature") for e in topk} == {1.0}  # no sweep
    assert all(e.request_params.get("top_logprobs") == 20 for e in topk)
    app = {name for name, kind in traffic.automation.items() if kind == "chat_app"}
    app_events = [e for e in traffic.events if identity_names(e.identity) & app]
    assert min(e.timestamp for e in app_events) < DEFAULT_START + 3600  # there from the start: its own days judge it
    assert sum(1 for e in app_events if e.timestamp < DEFAULT_START + 86400) > 4000  # its first day
