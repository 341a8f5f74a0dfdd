"""The alerts this package raises, with their MITRE ATLAS and OWASP LLM Top 10 (2025) mappings."""

from __future__ import annotations

import msgspec

from detectors.base import RuleInfo

OWASP_UNBOUNDED_CONSUMPTION = ("LLM10:2025",)

SCRAPING_VOLUME = RuleInfo(
    id="abusewatch-anomaly-scraping-volume",
    name="High-volume harvesting by one identity",
    category="scraping",
    level="high",
    description="One identity sent far more requests in a window than its own history and its peers suggest.",
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
SCRAPING_SLOW = RuleInfo(
    id="abusewatch-anomaly-scraping-slow",
    name="Low-and-slow automated harvesting",
    category="scraping",
    level="medium",
    description="Hours of continuous, machine-regular requests reusing one prompt template, enumerating values.",
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
SCRAPING_ENUMERATION = RuleInfo(
    id="abusewatch-anomaly-scraping-enumeration",
    name="Templated enumeration burst: one prompt template filled with many distinct values",
    category="scraping",
    level="high",
    description=(
        "In one window an identity sent many requests on one prompt template, each with another id, letter or "
        "entity in its slots and almost no context of its own: systematic harvesting, even from a new identity."
    ),
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
SCRAPING_CAMPAIGN = RuleInfo(
    id="abusewatch-anomaly-scraping-campaign",
    name="Distributed harvesting campaign: many identities share one prompt template",
    category="scraping",
    level="high",
    description="Several keys or users sent the same masked prompt template repeatedly in one window.",
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
SCRAPING_CAMPAIGN_ENUMERATION = RuleInfo(
    id="abusewatch-anomaly-scraping-campaign-enumeration",
    name="Distributed enumeration: many identities fill one prompt template with other values, a few requests each",
    category="scraping",
    level="high",
    description=(
        "In one window many keys or users, none sending much on its own, together sent many requests on one prompt "
        "template, each with other slot values and almost no context: a campaign spread thin (a couple of requests "
        "per key, or a new user id per request) that no identity's own window shows. In shadow mode by default "
        "(status test): an application whose users click one templated action (track order #n) looks the same."
    ),
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
    status="test",
)
SCRAPING_HARVEST = RuleInfo(
    id="abusewatch-anomaly-scraping-harvest",
    name="A day's harvest: many enumerated records taken in bare, stepped requests, however slowly",
    category="scraping",
    level="medium",
    description=(
        "Over about a day, in nearly every hour, one identity stepped through many values of a prompt template "
        "(item 41, item 42, ...) with no payload of its own, and took a large volume of output for them: harvesting "
        "judged on what was taken, not on timing, so chunked or jittered low-and-slow scraping shows too (keys and "
        "IPs shared by several identities are not judged). In shadow mode by default (status test): a benign job "
        "stepping through bare ids around the clock for long answers looks the same."
    ),
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
    status="test",
)
MODEL_EXTRACTION = RuleInfo(
    id="abusewatch-anomaly-model-extraction",
    name="Model extraction: log-probabilities, many choices or temperature sweeps over systematic prompts",
    category="model_extraction",
    level="high",
    description=(
        "Extraction-friendly parameters (logprobs, n > 1) with temperature sweeps, or on enumerated prompts that bring "
        "nothing but their values."
    ),
    atlas=("AML.T0040", "AML.T0024.002"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
RESOURCE_ABUSE = RuleInfo(
    id="abusewatch-anomaly-resource-abuse",
    name="Token spike: denial of wallet",
    category="resource_abuse",
    level="high",
    description="Token consumption in a window far above the identity's history or its peers (cost harvesting).",
    atlas=("AML.T0034", "AML.T0029"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
SCRAPING_DAY = RuleInfo(
    id="abusewatch-anomaly-scraping-day",
    name="A day's volume: far more requests over about a day than the identity's own days or its peers'",
    category="scraping",
    level="medium",
    description=(
        "Over about a day (a sum decayed with a 24-h time constant of event time) one identity, or a key or IP that "
        "several share, sent far more requests than its own earlier days, or, new, than 99 % of its peers' days, "
        "however it was paced: harvesting or sequence-level distillation under every window's thresholds (e.g. 145 "
        "requests every 10 minutes with diverse prompts)."
    ),
    atlas=("AML.T0040", "AML.T0024"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
MODEL_EXTRACTION_DAY = RuleInfo(
    id="abusewatch-anomaly-model-extraction-day",
    name="A day's extraction: sustained log-probabilities or several choices, far above the identity's days",
    category="model_extraction",
    level="medium",
    description=(
        "Over about a day one identity sent far more requests with logprobs / top_logprobs or n > 1 than its own "
        "earlier days, or, new, than 99 % of its peers' days, with or without a temperature sweep: top-k "
        "distillation at a fixed temperature, or a swept extraction kept under 10 requests a window."
    ),
    atlas=("AML.T0040", "AML.T0024.002"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
RESOURCE_ABUSE_DAY = RuleInfo(
    id="abusewatch-anomaly-resource-abuse-day",
    name="A day's spend: denial of wallet under the window threshold",
    category="resource_abuse",
    level="medium",
    description=(
        "Over about a day one identity, or a key or IP that several share, consumed far more tokens than its own "
        "earlier days, or, new, than 99 % of its peers' days (or more than a configured daily budget), however it "
        "was paced: spend kept under every window's 400,000 tokens."
    ),
    atlas=("AML.T0034", "AML.T0029"),
    owasp=OWASP_UNBOUNDED_CONSUMPTION,
)
# the day rules, in the order of detectors.anomaly.models.DAY_SUMS (tokens, requests, extraction requests)
DAY_RULES = (RESOURCE_ABUSE_DAY, SCRAPING_DAY, MODEL_EXTRACTION_DAY)
RULES = (
    SCRAPING_VOLUME,
    SCRAPING_ENUMERATION,
    SCRAPING_SLOW,
    SCRAPING_HARVEST,
    SCRAPING_CAMPAIGN,
    SCRAPING_CAMPAIGN_ENUMERATION,
    SCRAPING_DAY,
    MODEL_EXTRACTION,
    MODEL_EXTRACTION_DAY,
    RESOURCE_ABUSE,
    RESOURCE_ABUSE_DAY,
)


def with_status(rule: RuleInfo, status: str) -> RuleInfo:
    """A rule as its ``*_status`` setting has it: ``stable`` promotes a rule shipped in shadow to the SOC queue,
    ``test`` keeps a stable one (the day rules) in the shadow alerts."""
    if status in ("stable", "test") and rule.status != status:
        return msgspec.structs.replace(rule, status=status)
    return rule
