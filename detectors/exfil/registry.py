"""The application registry the SOC edits: system prompts, canary tokens and allowed domains per application.

The YAML file is re-read when its modification time changes, so edits apply without a restart. A file that does
not parse keeps the previous registry in force (and says why in the log); a missing file is an empty registry.

Format::

    defaults:                      # applies to every application
      allowed_domains: [cdn.example.com]
      allowed_email_domains: [example.com]
      canaries: [ABW-CANARY-0000]
    applications:
      support-bot:                 # the event's service.name
        system_prompts: ["You are the support assistant of ..."]
        canaries: [ABW-CANARY-7f3a]
        allowed_domains: [docs.example.com]
        allowed_email_domains: [example.com]
        allowed_resources: [acme/*, c0123abcd]   # shared resources it may write anything it reads into
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detectors.exfil.decoding import canonical_host
from detectors.exfil.measures import words
from detectors.matching import MultiMatcher, Pattern

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RegisteredPrompt:
    text: str
    words: tuple[str, ...]  # normalised, as the leakage check compares them


@dataclass(frozen=True, slots=True)
class AppProfile:
    """What the registry knows about one application (defaults merged in)."""

    name: str | None = None
    system_prompts: tuple[RegisteredPrompt, ...] = ()
    canaries: tuple[str, ...] = ()
    allowed_domains: frozenset[str] = frozenset()
    allowed_email_domains: frozenset[str] = frozenset()
    allowed_resources: frozenset[str] = frozenset()  # lower-case shell-style patterns over resource keys

    def domain_allowed(self, host: str) -> bool:
        return _under(host, self.allowed_domains)

    def email_domain_allowed(self, domain: str) -> bool:
        return _under(domain, self.allowed_email_domains | self.allowed_domains)

    def resource_allowed(self, resource: str) -> bool:
        """Whether a shared resource (``owner/repo``, a channel, a space: detectors/exfil/resources.py) is one
        the application may write what it reads into."""
        return any(fnmatch.fnmatchcase(resource.lower(), pattern) for pattern in self.allowed_resources)


def _under(host: str, domains: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in domains)


@dataclass(slots=True)
class _Snapshot:
    profiles: dict[str | None, AppProfile] = field(default_factory=dict)
    default: AppProfile = field(default_factory=AppProfile)
    canary_matcher: MultiMatcher | None = None
    canaries: tuple[str, ...] = ()


class AppRegistry:
    """Per-application profiles from a YAML file, reloaded when the file changes."""

    def __init__(
        self,
        path: Path | None,
        *,
        check_interval_s: float = 5.0,
        default_allowed_domains: Iterable[str] = (),
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self.default_allowed_domains = frozenset(_domain(d) for d in default_allowed_domains)
        self.load_error: str | None = None
        self._mtime: int | None = None
        self._checked_at = float("-inf")
        self._snapshot = self._build({})
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since the last look (looks at most every ``check_interval_s``)."""
        now = time.monotonic()
        if self.path is None or (not force and now - self._checked_at < self.check_interval_s):
            return
        self._checked_at = now
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            if self._mtime is not None:
                log.warning("exfil registry %s is gone; keeping the last loaded version", self.path)
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            if not isinstance(data, dict):
                raise ValueError(f"the registry must be a mapping, not {type(data).__name__}")
            self._snapshot = self._build(data)
            self.load_error = None
        except (OSError, yaml.YAMLError, ValueError, TypeError) as error:
            self.load_error = f"{type(error).__name__}: {error}"[:300]
            log.warning("exfil registry %s not loaded, keeping the previous one: %s", self.path, self.load_error)

    def profile(self, service_name: str | None) -> AppProfile:
        snapshot = self._snapshot
        return snapshot.profiles.get(service_name, snapshot.default)

    def has_canaries(self) -> bool:
        return self._snapshot.canary_matcher is not None

    def canary_hits(self, text: str) -> list[tuple[str, int, int]]:
        """Every registered canary in ``text`` (any application's: a canary is never benign) as (token, start, end)."""
        snapshot = self._snapshot
        if snapshot.canary_matcher is None:
            return []
        return [
            (snapshot.canaries[match.pattern_id], match.start, match.end)
            for match in snapshot.canary_matcher.scan(text)
        ]

    def _build(self, data: dict[str, Any]) -> _Snapshot:
        defaults = _mapping(data.get("defaults"), "defaults")
        default = self._profile(None, defaults, {})
        profiles: dict[str | None, AppProfile] = {}
        for name, entry in _mapping(data.get("applications"), "applications").items():
            profiles[str(name)] = self._profile(str(name), defaults, _mapping(entry, f"applications.{name}"))
        canaries = tuple(sorted({c for p in [default, *profiles.values()] for c in p.canaries}))
        matcher = MultiMatcher([Pattern(i, re.escape(c)) for i, c in enumerate(canaries)]) if canaries else None
        return _Snapshot(profiles, default, matcher, canaries)

    def _profile(self, name: str | None, defaults: dict[str, Any], entry: dict[str, Any]) -> AppProfile:
        def strings(key: str) -> list[str]:
            values = [*_strings(defaults.get(key), key), *_strings(entry.get(key), key)]
            return [v.strip() for v in values if v.strip()]

        prompts = [RegisteredPrompt(text, tuple(words(text))) for text in strings("system_prompts")]
        allowed = {_domain(d) for d in strings("allowed_domains")} | self.default_allowed_domains
        return AppProfile(
            name=name,
            system_prompts=tuple(prompts),
            canaries=tuple(c for c in strings("canaries") if len(c) >= 6),
            allowed_domains=frozenset(allowed),
            allowed_email_domains=frozenset(_domain(d) for d in strings("allowed_email_domains")),
            allowed_resources=frozenset(r.lower().lstrip("#") for r in strings("allowed_resources")),
        )


def _domain(entry: str) -> str:
    """An allowlist entry as hosts are compared (detectors.exfil.decoding.canonical_host): ``bücher.de`` is
    ``xn--bcher-kva.de``, as the URL check reads a host written either way."""
    return (canonical_host(entry) or entry.lower()).rstrip(".")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of strings")
    return value
