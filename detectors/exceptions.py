"""Alert exceptions: reviewed, expiring suppressions of known-benign detections, kept as data.

An exception names the rules it covers (ids or ``fnmatch`` globs, and/or whole categories such as ``jailbreak``),
conditions on the identity a detection is about (ANDed; each lists values, any of which matches), a reason and an
expiry date. A detection it matches does not reach the alert queue and does not add to the identity's risk score;
the pipeline writes it to the shadow alerts with the exception's id, so what exceptions hide stays auditable.
Example (one file holds a YAML list)::

    - id: bulk-summariser-scraping
      rules: [abusewatch-anomaly-scraping-*]
      match:
        abusewatch.api_key_hash: [9f86d081884c7d65]
        source.ip|cidr: [10.20.0.0/16]
      reason: Nightly summariser job, approved in SEC-1234
      author: jdoe
      created: 2026-11-01
      expires: 2027-02-01

A condition is ``FIELD: values`` (exact match) or ``FIELD|cidr: networks`` (IP fields). Muting every rule takes
``rules: ["*"]`` together with ``all_rules: true``, so nobody does it by accident. Conditions use only what a
detection carries (its identity; for a campaign alert, every identity it names, each of which must match: see
detectors/campaigns.py), so whether a detection is suppressed never depends on batching. Expiry is
judged in event time, as all alerting is: an exception applies to events before 00:00 UTC of its ``expires``
date, so a replay of old logs suppresses what the stream suppressed then (``created`` is a record, not a bound).

``user.id``, ``session.id`` and ``user_agent.original`` are asserted by the client (the OpenAI ``user`` field, a
header), so an attacker who learns an excepted value could borrow it; and ``source.ip`` is the client address a
proxy reported, which behind proxies comes from ``X-Forwarded-For`` (OTel ``client.address``, LiteLLM with
``use_x_forwarded_for``), whose left-most value the client writes. Every entry therefore needs a condition on a field
the platform derives itself (:data:`SERVER_FIELDS`), unless it opts in, explicitly and reviewably, to trusting what
it matches on: ``trust_client_fields: true`` where the gateway sets ``user.id`` from its own authentication,
``trust_forwarded_ip: true`` where the proxies in front overwrite ``X-Forwarded-For``. Naming every category mutes
every rule, so it takes ``all_rules: true`` like ``"*"``. Values must be YAML text: ``010`` unquoted is the number 8
to YAML, so numbers are refused with the quoted form to write instead, and so are dates (an impossible one, such as
``2027-02-30``, is an error of its entry rather than of the whole file).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from detectors.base import CATEGORIES, Category, Detection
from detectors.event import ANONYMOUS, Identity
from detectors.signatures.ruleset import yaml_files

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The ECS fields a condition may test, as rendered on alert documents (detectors/documents.py identity_fields).
FIELDS: dict[str, Callable[[Identity], str | None]] = {
    "user.id": lambda identity: identity.user_id,
    "source.ip": lambda identity: identity.source_ip,
    "organization.id": lambda identity: identity.organization_id,
    "session.id": lambda identity: identity.session_id,
    "user_agent.original": lambda identity: identity.user_agent,
    "abusewatch.api_key_hash": lambda identity: identity.api_key_hash,
    "abusewatch.team_id": lambda identity: identity.team_id,
    "abusewatch.identity_key": Identity.key,
}
IP_FIELDS = frozenset({"source.ip"})
# Fields the platform derives itself (API key, tenant), as opposed to values the client asserts. The normalisers
# keep to it: Bedrock's api_key_hash is the hash of the AWS-authenticated principal ARN.
SERVER_FIELDS = frozenset({"abusewatch.api_key_hash", "organization.id", "abusewatch.team_id"})
# The address a proxy reported: the connection's peer, or the left-most X-Forwarded-For value, which the client
# writes (the normalisers never read an address from the request body: Bedrock requestMetadata.client_ip is not read).
FORWARDED_FIELDS = frozenset({"source.ip"})
CLIENT_FIELDS = frozenset({"user.id", "session.id", "user_agent.original"})
# What an abusewatch.identity_key value was taken from, by its prefix (see Identity.key).
IDENTITY_KEY_FIELDS = {
    "key:": "abusewatch.api_key_hash",
    "ip:": "source.ip",
    "user:": "user.id",
    "session:": "session.id",
}
MIN_PREFIX = {4: 8, 6: 32}  # a wider network is a disabled rule, not an exception
OPERATORS = ("cidr",)  # after ``|``; no operator means exact match
ALL_RULES = "*"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class ExceptionsError(ValueError):
    """An exceptions file or directory that cannot be used; ``errors`` names the file and entry of each problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid exceptions:\n" + "\n".join(f"  {error}" for error in self.errors))


class ExceptionEntry(BaseModel):
    """One exception as written in YAML, validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    rules: list[str] = []
    categories: list[Category] = []  # every rule of these categories, e.g. for a red-team user
    all_rules: bool = False
    trust_client_fields: bool = False  # user.id, session.id, user_agent.original count as trusted (see the module doc)
    trust_forwarded_ip: bool = False  # source.ip counts as trusted: the proxies overwrite X-Forwarded-For
    match: dict[str, list[str]] = Field(min_length=1)
    reason: str
    author: str | None = None
    created: date | None = None
    expires: date
    _conditions: tuple[Condition, ...] = PrivateAttr(default=())  # compiled once, by validation

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The ``match`` conditions compiled, exact ones first: a set lookup rules most detections out before any
        address is parsed."""
        return self._conditions

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
        return value

    @field_validator("reason")
    @classmethod
    def _reason_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must say why the detections are benign")
        return value.strip()

    @field_validator("rules")
    @classmethod
    def _rule_patterns(cls, value: list[str]) -> list[str]:
        if any(not pattern.strip() for pattern in value):
            raise ValueError("rule ids must not be empty")
        padded = [pattern for pattern in value if pattern != pattern.strip()]
        if padded:  # ' r-volume' would match no rule, silently
            raise ValueError(f"rule id {padded[0]!r} has leading or trailing spaces")
        return value

    @field_validator("match", mode="before")
    @classmethod
    def _values_as_lists(cls, value: Any) -> Any:
        """``user.id: alice`` is short for ``user.id: [alice]``; an unquoted number is refused (see _UnquotedNumber)."""
        if not isinstance(value, dict):
            return value
        lists = {key: v if isinstance(v, list) else [v] for key, v in value.items()}
        for key, items in lists.items():
            for item in items:
                if isinstance(item, _UnquotedNumber):
                    raise ValueError(
                        f"{key!r}: {item} is a number to YAML ({item.number!r}), not text: quote it: '{item}'"
                    )
                if isinstance(item, bool | date | _InvalidTimestamp) or item is None:
                    raise ValueError(f"{key!r}: {item!r} is not text to YAML (true/yes, dates, null): quote it")
        return lists

    @field_validator("created", "expires", mode="before")
    @classmethod
    def _iso_date(cls, value: Any) -> Any:
        if isinstance(value, _InvalidTimestamp):
            raise ValueError(f"{value} is not a date: {value.problem}")
        if isinstance(value, datetime | _UnquotedNumber) or not isinstance(value, date | str):
            raise ValueError(f"must be an ISO date (YYYY-MM-DD), not {value!r}")
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"must be an ISO date (YYYY-MM-DD), not {value!r}") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ExceptionEntry:
        if not self.rules and not self.categories:
            raise ValueError("name the rules it covers: rules (ids or globs) and/or categories")
        everything = [pattern for pattern in self.rules if set(pattern) == {ALL_RULES}]
        if everything and not self.all_rules:
            raise ValueError(f"rules {everything[0]!r} mutes every rule: say so with all_rules: true")
        if self.all_rules and self.rules != [ALL_RULES]:
            raise ValueError(f"all_rules: true goes with rules: [{ALL_RULES!r}] only")
        if not self.all_rules and set(CATEGORIES) <= set(self.categories):
            raise ValueError(
                f"categories: every category mutes every rule: say so with rules: [{ALL_RULES!r}] and all_rules: true"
            )
        conditions = [_condition(key, values) for key, values in self.match.items()]  # raises on bad ones
        self._conditions = tuple(sorted(conditions, key=lambda condition: bool(condition.networks)))
        if not any(self._trusted(condition) for condition in conditions):
            raise ValueError(_untrusted_message(conditions))
        if self.created is not None and self.created > self.expires:
            raise ValueError(f"created {self.created} is after expires {self.expires}")
        return self

    def _trusted(self, condition: Condition) -> bool:
        """Whether ``condition`` holds only for what the platform vouches for: each field it reads is server-derived,
        or of a kind this entry opts in to trusting."""
        trusted = SERVER_FIELDS | (CLIENT_FIELDS if self.trust_client_fields else set())
        trusted |= FORWARDED_FIELDS if self.trust_forwarded_ip else set()
        return _source_fields(condition) <= trusted


def _source_fields(condition: Condition) -> set[str]:
    """The identity fields a condition's values come from: its own field, or for ``abusewatch.identity_key`` the field
    each value's prefix names (user.id, a client field, for a value of no known prefix)."""
    field = condition.field.partition("|")[0]
    if field != "abusewatch.identity_key":
        return {field}
    return {
        next((source for prefix, source in IDENTITY_KEY_FIELDS.items() if value.startswith(prefix)), "user.id")
        for value in condition.values
    }


def _untrusted_message(conditions: Sequence[Condition]) -> str:
    """Why no condition of an entry is trusted, with the opt-in each kind of field it uses would need."""
    used = set().union(*map(_source_fields, conditions))
    reasons = []
    if used & CLIENT_FIELDS:
        reasons.append(
            "user.id, session.id and user_agent.original are set by the client "
            "(say trust_client_fields: true if your gateway sets them)"
        )
    if used & FORWARDED_FIELDS:
        reasons.append(
            "source.ip may come from X-Forwarded-For, which the client writes "
            "(say trust_forwarded_ip: true if the proxies in front overwrite it)"
        )
    server = f"{', '.join(sorted(SERVER_FIELDS))} or a key: abusewatch.identity_key"
    return f"match: add a condition on a field the platform derives ({server}): {'; '.join(reasons)}"


class Condition(NamedTuple):
    """A compiled condition: the identity value ``read`` returns must be in ``values`` (or in a network)."""

    field: str
    read: Callable[[Identity], str | None]
    values: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def holds(self, identity: Identity) -> bool:
        value = self.read(identity)
        if not value:
            return False
        if not self.networks:
            return value in self.values
        address = _address(value)
        return address is not None and any(address in network for network in self.networks)


def _condition(key: str, values: list[str]) -> Condition:
    field, _, operator = key.partition("|")
    if field not in FIELDS:
        raise ValueError(f"match: unknown field {field!r} (known: {', '.join(FIELDS)})")
    if operator and operator not in OPERATORS:
        raise ValueError(f"match: {key!r}: unknown operator {operator!r} (known: {', '.join(OPERATORS)})")
    if not values or any(not isinstance(v, str) or not v for v in values):
        raise ValueError(f"match: {key!r} needs a list of non-empty text values (quote dates and numbers)")
    if field == "abusewatch.identity_key" and ANONYMOUS in values:
        raise ValueError(f"match: {key!r}: {ANONYMOUS!r} is every event without an identity, not one identity")
    if operator == "cidr" and field not in IP_FIELDS:
        raise ValueError(f"match: {key!r}: cidr applies to {', '.join(sorted(IP_FIELDS))} only")
    if field not in IP_FIELDS:
        return Condition(key, FIELDS[field], frozenset(values), ())
    networks = []
    for value in values:
        try:
            network = _unmapped(
                ipaddress.ip_network(value, strict=True)
                if operator
                else ipaddress.ip_network(ipaddress.ip_address(value))
            )
        except ValueError as error:
            hint = "" if operator else f" (networks go under {field}|cidr)"
            raise ValueError(f"match: {key!r}: bad {'CIDR' if operator else 'IP address'}: {error}{hint}") from None
        if network.prefixlen < MIN_PREFIX[network.version]:
            raise ValueError(
                f"match: {key!r}: {value} is too wide (IPv{network.version} networks need a prefix of at least "
                f"/{MIN_PREFIX[network.version]})"
            )
        networks.append(network)
    return Condition(key, FIELDS[field], frozenset(), tuple(networks))


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/104``) as its IPv4 network (``10.0.0.0/8``), because
    events' addresses are compared in that form (:func:`_address`); any other network as it is."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # inside ::ffff:0:0/96
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@functools.lru_cache(maxsize=4096)  # a busy identity's address is parsed once, not on every detection
def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``value`` as an IP address (an IPv4-mapped IPv6 address as its IPv4 one); None if it is not one."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class KnownRules(NamedTuple):
    """The rules the product can raise (see detectors/catalogue.py): their ids and the categories they alert in."""

    rule_ids: frozenset[str]
    categories: frozenset[str]


class RuleScope(NamedTuple):
    """One rule as an exception selects it (by id or category) with its level: what ``exceptions check`` counts."""

    id: str
    name: str
    category: str  # "" for the entity-risk alerts: theirs is that of the identity's other alerts
    level: str


@dataclass(frozen=True, slots=True)
class AlertException:
    """An exception compiled for matching: rule patterns and conditions checked on every detection."""

    entry: ExceptionEntry
    source: str  # the file it came from
    conditions: tuple[Condition, ...]
    expires_at: float  # epoch seconds: 00:00 UTC of the expiry date

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def reason(self) -> str:
        return self.entry.reason

    def covers(self, rule_id: str, category: str) -> bool:
        """Whether the exception names this rule (by id or glob, by category, or as one of all rules)."""
        entry = self.entry
        return (
            entry.all_rules
            or category in entry.categories
            or any(fnmatch.fnmatchcase(rule_id, pattern) for pattern in entry.rules)
        )

    def matches(self, detection: Detection, identities: Sequence[Identity] | None = None) -> bool:
        """Whether this exception, already known to cover the rule, suppresses ``detection`` (in event time): its
        conditions must hold for each of ``identities`` (by default the detection's own identity)."""
        named = (detection.identity,) if identities is None else identities
        return (
            detection.timestamp < self.expires_at
            and bool(named)
            and all(c.holds(identity) for identity in named for c in self.conditions)
        )

    def covered(self, rules: Iterable[RuleScope]) -> list[RuleScope]:
        """The ones of ``rules`` this exception covers."""
        return [rule for rule in rules if self.covers(rule.id, rule.category)]

    def unknown_rules(self, known: KnownRules) -> list[str]:
        """The rule ids and globs of this exception that match no rule in ``known`` (``all_rules`` names every
        rule, known or not)."""
        if self.entry.all_rules:
            return []
        return [p for p in self.entry.rules if not any(fnmatch.fnmatchcase(i, p) for i in known.rule_ids)]

    def unknown_categories(self, known: KnownRules) -> list[str]:
        """The categories of this exception that no rule in ``known`` alerts in."""
        return [category for category in self.entry.categories if category not in known.categories]

    def expired(self, today: date) -> bool:
        return self.entry.expires <= today


def compile_entry(entry: ExceptionEntry, source: str) -> AlertException:
    """``entry`` ready for matching; ``source`` names its file in messages."""
    expires_at = datetime.combine(entry.expires, time(), tzinfo=UTC).timestamp()
    return AlertException(entry=entry, source=source, conditions=entry.conditions, expires_at=expires_at)


class ExceptionList:
    """The exceptions in force; :meth:`match` runs on every detection, so candidates are cached per rule id."""

    def __init__(self, exceptions: Iterable[AlertException] = ()) -> None:
        self.exceptions = list(exceptions)
        self._by_rule: dict[tuple[str, str], tuple[AlertException, ...]] = {}

    def __len__(self) -> int:
        return len(self.exceptions)

    def match(self, detection: Detection, identities: Sequence[Identity] | None = None) -> AlertException | None:
        """The first exception (in file, then entry order) that suppresses ``detection``, or None. ``identities``
        are those the detection is about when it names several (a campaign's members; see
        :meth:`AlertException.matches`), by default its own identity."""
        if not self.exceptions:
            return None
        rule = (detection.rule.id, detection.rule.category)
        candidates = self._by_rule.get(rule)
        if candidates is None:  # rule ids come from the rule pack, so this cache stays small
            candidates = self._by_rule[rule] = tuple(e for e in self.exceptions if e.covers(*rule))
        return next((e for e in candidates if e.matches(detection, identities)), None)

    def expired(self, today: date) -> list[AlertException]:
        return [e for e in self.exceptions if e.expired(today)]

    def expiring(self, today: date, days: int) -> list[AlertException]:
        """Exceptions still in force that expire within ``days`` of ``today``."""
        return [e for e in self.exceptions if not e.expired(today) and (e.entry.expires - today).days <= days]

    def unknown_rule_warnings(self, known: KnownRules) -> list[str]:
        """One message per rule pattern or category that names no rule in ``known`` (file, entry id, selector
        and, for a rule id that is not a glob, the closest known one): a typo there suppresses nothing, silently."""
        warnings = []
        for exception in self.exceptions:
            where = f"{exception.source}: {exception.id}"
            for pattern in exception.unknown_rules(known):
                glob = any(character in pattern for character in "*?[")  # no closest id for a glob
                closest = [] if glob else difflib.get_close_matches(pattern, known.rule_ids, n=1)
                hint = f" (closest known rule: {closest[0]})" if closest else ""
                warnings.append(f"{where}: rule {pattern!r} matches no known rule{hint}")
            warnings.extend(
                f"{where}: category {category!r}: no known rule alerts in it"
                for category in exception.unknown_categories(known)
            )
        return warnings


def exception_files(path: Path) -> list[Path]:
    """``path`` itself, or the YAML files under a directory, as for rule files (:func:`yaml_files`: hidden files and
    directories such as ``.github/`` are skipped)."""
    return yaml_files(path)


def load_exceptions(path: Path) -> ExceptionList:
    """Load and validate every exception under ``path``; raises :class:`ExceptionsError` listing all problems."""
    if not path.exists():
        raise ExceptionsError([f"{path}: no such file or directory"])
    errors: list[str] = []
    loaded: list[AlertException] = []
    seen: dict[str, str] = {}
    for file in exception_files(path):
        for number, raw in _entries(file, errors):
            where = f"{file}: entry {number}" + (f" (id {raw['id']!r})" if isinstance(raw.get("id"), str) else "")
            try:
                entry = ExceptionEntry.model_validate(raw)
            except ValidationError as error:
                errors.extend(f"{where}: {describe(problem)}" for problem in error.errors())
                continue
            if entry.id in seen:
                errors.append(f"{where}: duplicate id (first defined in {seen[entry.id]})")
                continue
            seen[entry.id] = str(file)
            loaded.append(compile_entry(entry, str(file)))
    if errors:
        raise ExceptionsError(errors)
    return ExceptionList(loaded)


def _entries(file: Path, errors: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """The raw entries of one file (a YAML list of mappings) with their 1-based numbers; problems go to ``errors``."""
    if file.is_symlink() and not file.exists():
        errors.append(f"{file}: dangling symlink (to {os.readlink(file)})")
        return []
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, ValueError, yaml.YAMLError) as error:  # ValueError: a YAML constructor's (!!int abc)
        errors.append(f"{file}: cannot read: {' '.join(str(error).split())}")
        return []
    if data is None:
        return []
    if not isinstance(data, list):
        errors.append(f"{file}: must hold a YAML list of exceptions, not {type(data).__name__}")
        return []
    entries = []
    for number, item in enumerate(data, start=1):
        if isinstance(item, dict):
            entries.append((number, item))
        else:
            errors.append(f"{file}: entry {number}: must be a mapping, not {type(item).__name__}")
    return entries


class _UnquotedNumber(str):
    """An unquoted YAML number, kept as written so the error can show it quoted; ``number`` is what YAML reads."""

    number: int | float


class _InvalidTimestamp(str):
    """An unquoted YAML date that is no calendar date (``2027-02-30``), kept as written with ``problem`` saying why:
    PyYAML would raise a bare ValueError for the whole file, naming neither the entry nor the field."""

    problem: str


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (YAML would keep the last one silently), keeps unquoted
    numbers as written (:class:`_UnquotedNumber`: ``user.id: [010]`` would otherwise be the text ``8``) and impossible
    dates as :class:`_InvalidTimestamp`, for the entry's validation to refuse."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable: the base class reports it
            if key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r} on line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _number(self, node: yaml.ScalarNode, construct: Callable[..., Any]) -> _UnquotedNumber:
        text = _UnquotedNumber(self.construct_scalar(node))
        text.number = construct(self, node)
        return text

    def _timestamp(self, node: yaml.ScalarNode) -> date | datetime | _InvalidTimestamp:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError as error:
            text = _InvalidTimestamp(self.construct_scalar(node))
            text.problem = str(error)
            return text


_StrictLoader.add_constructor(
    "tag:yaml.org,2002:int", lambda loader, node: loader._number(node, yaml.SafeLoader.construct_yaml_int)
)
_StrictLoader.add_constructor(
    "tag:yaml.org,2002:float", lambda loader, node: loader._number(node, yaml.SafeLoader.construct_yaml_float)
)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader._timestamp)


def describe(problem: Any) -> str:
    """One pydantic error as ``field: message``, without pydantic's URLs and with our own messages unwrapped."""
    location = ".".join(str(part) for part in problem.get("loc", ()))
    message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
    if problem.get("type") == "missing":
        message = "required"
    return f"{location}: {message}" if location else message
