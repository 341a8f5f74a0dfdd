"""Configuration of the exfiltration and leakage detectors: thresholds, the registry file, what is redacted.

Thresholds were tuned on the train split of ``tests/fixtures/exfil`` only (see docs/exfiltration.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

EGRESS_TOOL_WORDS = (
    "send",
    "email",
    "mail",
    "gmail",
    "outlook",
    "draft",  # a mail draft to an outside address is one click (or one agent step) from sent
    "reply",
    "smtp",
    "post",
    "http",
    "https",
    "request",
    "fetch",
    "curl",
    "wget",
    "webhook",
    "upload",
    "share",
    "publish",
    "notify",
    "slack",
    "sms",
    "message",
    "forward",
    "export",
    "transfer",
    "browse",
    "open",
    "navigate",
    "visit",
    "url",
)

EXFIL_SINK_DOMAINS = (
    "webhook.site",
    "requestbin.net",
    "requestbin.com",
    "pipedream.net",
    "ngrok.io",
    "ngrok-free.app",
    "ngrok.app",
    "pastebin.com",
    "transfer.sh",
    "interact.sh",
    "oast.fun",
    "oast.pro",
    "oastify.com",
    "burpcollaborator.net",
    "requestcatcher.com",
    "beeceptor.com",
    "hookbin.com",
    "trycloudflare.com",
)


class ExfilConfig(BaseModel):
    """Everything the exfiltration tier can be tuned with; the defaults are the tuned values."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silently ignored tunable

    registry_path: Path | None = None  # YAML with per-application prompts, canaries and allowlists
    registry_check_interval_s: float = 5.0  # how often the registry file's mtime is looked at
    max_scan_chars: int = 256 * 1024  # longer texts are scanned up to this many characters
    # validated values kept per anchor pattern (anchors that fail validation do not count): bounds the redactor's work
    max_candidates_per_pattern: int = 1024
    max_anchors_per_pattern: int = 16_384  # raw anchor matches per pattern: keeps hostile input cheap (see docstring)

    # secrets
    generic_secret_min_entropy: float = 3.0  # Shannon bits/char of a `password = '...'` value
    generic_secret_min_length: int = 8

    # system-prompt leakage
    leak_shingle_words: int = 5
    leak_min_share: float = 0.15  # share of the system prompt's shingles reproduced (tuned on train: 0.3 -> 0.15)
    leak_min_words: int = 25  # and at least this many of its words reproduced
    # the same, added up over a session's responses (a prompt asked for piece by piece): a higher share, from at least
    # two responses; alerts in shadow until measured on real sessions ("stable" sends them to the queue)
    leak_across_turns_min_share: float = 0.3
    leak_across_turns_status: Literal["test", "stable"] = "test"

    # data flows into URLs and tool calls
    carrier_min_length: int = 20  # URL parameter / path values shorter than this carry no data
    carrier_min_entropy: float = 4.2  # bits/char over which an opaque value counts as data
    flow_min_chars: int = 16  # a decoded value must be this long to be matched against the conversation
    flow_shingle_words: int = 4
    flow_min_share: float = 0.5  # share of a decoded value's shingles found in the conversation
    egress_tool_words: tuple[str, ...] = EGRESS_TOOL_WORDS
    exfil_sink_domains: tuple[str, ...] = EXFIL_SINK_DOMAINS
    default_allowed_domains: tuple[str, ...] = ()  # allowed for every application, on top of the registry

    # per-session memory of fingerprints of the values that reached the model (traces leaks across events)
    memory_key: SecretStr = SecretStr("abusewatch-exfil-memory")  # keys the fingerprints; set per deployment
    memory_ttl_s: float = 3600.0
    memory_max_sessions: int = 50_000

    # redaction: which found values are handed to the pipeline's Redactor
    redact_secrets: bool = True
    redact_pii: bool = True
    redact_ip_addresses: bool = False  # masking IPs would also mask source.ip in the ECS document
    pii_kinds: frozenset[str] = Field(default_factory=frozenset)  # empty: all PII kinds
