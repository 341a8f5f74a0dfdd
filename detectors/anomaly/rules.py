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
RULES = (
    SCRAPING_VOLUME,
    SCRAPING_ENUMERATION,
    SCRAPING_SLOW,
    SCRAPING_HARVEST,
    SCRAPING_CAMPAIGN,
    SCRAPING_CAMPAIGN_ENUMERATION,
    MODEL_EXTRACTION,
    RESOURCE_ABUSE,
)


def with_status(rule: RuleInfo, status: str) -> RuleInfo:
    """A rule shipped in shadow as its ``*_status`` setting has it: ``stable`` promotes it to the SOC queue."""
    return msgspec.structs.replace(rule, status="stable") if status == "stable" else rule
