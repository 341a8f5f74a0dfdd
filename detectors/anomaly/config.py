"""Thresholds and sizes of the anomaly detector, in one validated model (tuned by ``bench/eval_anomaly.py``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AnomalyConfig(BaseModel):
    """Every tunable of :class:`detectors.anomaly.AnomalyDetector`. Times are event-time seconds.

    Defaults were tuned on simulator seeds 0-2 and reported on held-out seeds 10-12 (``docs/anomaly.md``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # windows and state
    window_seconds: float = Field(600.0, gt=0, description="Tumbling window size, aligned to the epoch.")
    allowed_lateness_seconds: float = Field(60.0, ge=0, description="Watermark = newest event time minus this.")
    idle_ttl_seconds: float = Field(7 * 86400.0, gt=0, description="Forget identities idle this long.")
    max_entities: int = Field(
        250_000, ge=10, description="Entities kept per partition; beyond, the least recently seen tenth is forgotten."
    )
    max_templates: int = Field(
        16, ge=1, description="Template counters per identity window (Space-Saving: the heaviest templates are kept)."
    )
    max_distinct: int = Field(32, ge=1, description="Distinct IPs / user agents / primaries counted per window.")
    step_templates: int = Field(
        4,
        ge=1,
        description=(
            "Templates whose last prompt each entity remembers for enumeration steps, so that a step shows across "
            "decoy requests or alternating phrasings (1: only the previous prompt that had values); places they "
            "leave keep the prompt a template's last jumped far from. A key or IP that several identities share, "
            "and the anonymous entity, remember one."
        ),
    )
    max_event_ids: int = Field(10, ge=1, description="Event ids an alert carries per window.")
    template_hamming: int = Field(3, ge=0, le=16, description="SimHash bits two prompts may differ in and match.")
    min_template_chars: int = Field(24, ge=0, description="Shorter masked prompts take no part in campaigns.")
    prompt_chars: int = Field(2000, ge=64, description="Prompt prefix that features read.")

    # own-history baseline
    baseline_span_windows: float = Field(36.0, gt=1, description="EWMA span, in active windows.")
    identity_warmup_windows: int = Field(1, ge=0, description="No alerts before an identity closed this many.")
    z_threshold: float = Field(4.0, gt=0, description="Own-history z-score that counts as anomalous.")
    long_span_windows: float = Field(12.0, gt=1, description="EWMA span of the slow (hours) behaviour signals.")

    # peer model
    peer_warmup_windows: int = Field(300, ge=0, description="Windows the peer model learns before it scores.")
    peer_threshold: float = Field(0.97, gt=0, le=1, description="Half-Space-Trees score that counts as anomalous.")
    peer_z_threshold: float = Field(4.5, gt=0, description="z-score against the peer population that is anomalous.")
    peer_span_windows: float = Field(5000.0, gt=1, description="EWMA span of the peer population baseline.")
    peer_trees: int = Field(15, ge=1)
    peer_height: int = Field(8, ge=2)
    peer_window: int = Field(250, ge=10, description="HST reference window, in identity windows.")
    seed: int = 7

    # scraping: high volume
    volume_min_requests: int = Field(150, ge=1, description="Requests in one window before volume can alert.")
    volume_hard_requests: int = Field(600, ge=1, description="Requests in one window that alert on their own.")

    # scraping: templated enumeration burst (needs no warm-up: judged on the window's own structure)
    enumeration_min_requests: int = Field(
        60, ge=1, description="Requests on one template in a window: ~1 per 10 s, beyond interactive use."
    )
    enumeration_min_template_share: float = Field(
        0.4, ge=0, le=1, description="Share of the window's prompts on that template (diversity collapsed)."
    )
    enumeration_min_distinct_share: float = Field(
        0.8, ge=0, le=1, description="Distinct slot values per request on it: each asks for another entity."
    )
    enumeration_max_context_tokens: float = Field(
        150.0, ge=0, description="Mean tokens per request beyond the app's own text: batch jobs send documents."
    )
    enumeration_max_slot_chars: float = Field(
        40.0, ge=0, description="Mean characters of values and quoted strings per prompt: a payload is longer."
    )

    # scraping / extraction: low and slow
    slow_min_hours: float = Field(
        2.0, gt=0, description="Hours of activity in one run (active windows, short gaps bridged) before slow rules."
    )
    slow_max_gap_windows: int = Field(
        2,
        ge=0,
        description=(
            "Empty windows the around-the-clock path's count of active windows survives; more restart it (a benign "
            "regular bot that pauses longer never reaches that path)."
        ),
    )
    slow_enumeration_max_gap_windows: int = Field(
        4,
        ge=0,
        description=(
            "Empty windows a run survives for the enumeration path (slow averages decay across them); more end it. "
            "At least slow_max_gap_windows."
        ),
    )
    slow_max_interarrival_cv: float = Field(0.5, gt=0, description="Inter-arrival coefficient of variation: bot.")
    slow_min_bare_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Share of a run's windows (an average over the active ones) within the enumeration rule's payload limits "
            "for an enumerator to be judged on its CV without rests: a job that sends a document with most requests "
            "keeps its rests in the CV, even in a window whose documents happen to be short."
        ),
    )
    slow_min_template_reuse: float = Field(0.5, ge=0, le=1)
    slow_min_enumeration: float = Field(0.3, ge=0, le=1)
    around_clock_hours: float = Field(12.0, gt=0, description="Continuous, regular, templated for this long.")

    # scraping: a day's harvest (what was taken, whatever the timing)
    harvest_status: Literal["off", "test", "stable"] = Field(
        "test",
        description=(
            "The harvest rule: test = shadow alerts only, until its alerts on your traffic are checked; stable = "
            "alerts; off = not judged."
        ),
    )
    harvest_span_seconds: float = Field(
        86400.0, gt=0, description="Time constant of the harvest's exponential decay: about a day's taking."
    )
    harvest_min_steps: float = Field(
        40.0, gt=0, description="Enumeration steps in bare windows (decayed): records taken one after another."
    )
    harvest_min_hours: int = Field(
        20,
        ge=1,
        le=24,
        description="Of the last 24 hours, those with such a window: around the clock, longer than a person's day.",
    )
    harvest_min_output_tokens: float = Field(
        25_000.0, ge=0, description="Output tokens of those steps (decayed): long answers, not status lookups."
    )

    # a day's sums: spend, volume and extraction parameters that no window shows (judged per identity, and per key or
    # IP that several identities share)
    day_status: Literal["off", "test", "stable"] = Field(
        "stable",
        description=(
            "The day rules (tokens, requests and requests with extraction parameters over about a day): stable = "
            "alerts; test = shadow alerts only (to check them on your traffic first); off = not judged."
        ),
    )
    day_span_seconds: float = Field(
        86400.0, gt=0, description="Time constant of the day sums' exponential decay: about a day's taking."
    )
    day_min_tokens: float = Field(
        5_000_000.0, ge=0, description="Decayed tokens below which the tokens of a day never alert (resource abuse)."
    )
    day_min_requests: float = Field(
        3_000.0, ge=0, description="Decayed requests below which the requests of a day never alert (scraping)."
    )
    day_min_extraction_requests: float = Field(
        500.0,
        ge=0,
        description="Decayed requests with logprobs / n > 1 below which they never alert (model extraction).",
    )
    day_z_threshold: float = Field(
        4.0, gt=0, description="z-score of a day sum against the entity's own days (logs) that is anomalous."
    )
    day_history_span_days: float = Field(14.0, gt=1, description="EWMA span of an entity's own days, in active days.")
    day_new_days: int = Field(
        2,
        ge=1,
        description=(
            "A new entity (first seen after the detector's first day) is judged against its peers' days until it "
            "has this many days of its own (the first usually partial), then against its own."
        ),
    )
    day_peer_quantile: float = Field(0.99, gt=0, lt=1, description="Quantile of the peers' days a new entity meets.")
    day_peer_factor: float = Field(
        10.0, ge=1, description="A new entity's day sum must be this many times that quantile to alert."
    )
    day_peer_warmup: int = Field(
        30, ge=1, description="Identity-days the peers must have learned before a new entity is judged against them."
    )
    day_peer_span: float = Field(5000.0, gt=1, description="Identity-days the peers' histograms remember (decay).")
    day_token_budget: float | None = Field(
        None,
        gt=0,
        description=(
            "Optional absolute budget: tokens of one entity in one UTC day that alert (resource abuse) whatever its "
            "history; None: no budget."
        ),
    )

    # model extraction
    extraction_min_requests: int = Field(10, ge=1)
    extraction_min_param_rate: float = Field(0.5, ge=0, le=1, description="Share with logprobs / n > 1.")
    extraction_min_temperature_std: float = Field(0.3, ge=0)
    extraction_min_distinct_temperatures: int = Field(4, ge=1)

    # resource abuse (denial of wallet)
    tokens_min: int = Field(400_000, ge=1, description="Tokens in one window before resource abuse can alert.")
    tokens_per_request_hard: int = Field(16_000, ge=1, description="Mean tokens per request that alert alone.")

    # distributed campaign
    campaign_min_identities: int = Field(5, ge=2, description="Identities sharing one template in a window.")
    campaign_min_requests: int = Field(3, ge=1, description="Requests per identity on the shared template.")
    campaign_max_identities: int = Field(200, ge=2, description="Identities remembered per template.")
    campaign_memory_seconds: float = Field(86400.0, gt=0, description="How long campaign members are listed.")
    campaign_max_templates: int = Field(50_000, ge=1, description="Templates remembered per window.")
    campaign_rejudge_seconds: float = Field(
        1800.0,
        ge=0,
        description=(
            "How long (event time) a closed window is kept, so that late members (a partition back from a stall) "
            "can still complete a campaign, or join the alert of the one it raised; 0: never."
        ),
    )
    campaign_rejudge_max_members: int = Field(
        50_000,
        ge=0,
        description=(
            "Members of the closed windows kept, in all (~0.5 KiB each): those without a campaign first, the busiest "
            "first."
        ),
    )
    campaign_enumeration_status: Literal["off", "test", "stable"] = Field(
        "test",
        description=(
            "The distributed-enumeration rule (a template's window judged in total): test = shadow alerts only, "
            "until its alerts on your traffic are checked; stable = alerts; off = not judged."
        ),
    )

    def is_bare(self, context_tokens: float, slot_chars: float) -> bool:
        """Within the enumeration rule's payload limits: requests that bring no payload of their own, only values
        (context tokens per request and slot characters per prompt; a NaN is not within them)."""
        return context_tokens <= self.enumeration_max_context_tokens and slot_chars <= self.enumeration_max_slot_chars

    @model_validator(mode="after")
    def _enumeration_gap_covers_clock_gap(self) -> AnomalyConfig:
        """The around-the-clock count lives inside the run, so the run must bridge at least the gaps it does."""
        if self.slow_enumeration_max_gap_windows < self.slow_max_gap_windows:
            raise ValueError(
                f"slow_enumeration_max_gap_windows ({self.slow_enumeration_max_gap_windows}) must be at least "
                f"slow_max_gap_windows ({self.slow_max_gap_windows})"
            )
        return self
