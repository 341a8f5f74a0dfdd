"""URL and markdown exfiltration: data smuggled to a foreign host inside a URL the model emitted.

A markdown image (``![..](url)``, ``![..][ref]`` and its collapsed and shortcut forms, ``<img src>``) is fetched
by the client as soon as it renders, without a click, so an injected instruction that makes the model write one
leaks whatever sits in its URL. Links and bare URLs need a click and weigh less. A URL counts when its host is not
on the application's allowlist and a parameter value, path segment (a file extension aside) or fragment carries
data: conversation data found after decoding (the strongest signal), or an opaque high-entropy / encoded value.
URLs are read as browsers load them: ``https:\\\\host`` and protocol-relative ``//host`` in a markdown or HTML
destination count, and so do the CommonMark destinations ``( url)`` and ``(<url>)``. A URL in a tool call's
arguments is fetched by the tool, without a click either (:func:`_fetched_leak`).
"""

from __future__ import annotations

import functools
import html
import itertools
import string
import unicodedata
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import msgspec
import re2

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import COMPLETION, DOCUMENT, SYSTEM, TOOL_ARGUMENTS, TOOL_RESULT
from detectors.exfil.candidates import Hit, Spec, Valid, extend_over
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.decoding import ENCODINGS, canonical_host, decoded_forms
from detectors.exfil.flows import ConversationIndex, Flow, FlowTracer
from detectors.exfil.masking import Masker
from detectors.exfil.measures import shannon_entropy, words

Render = Literal["image", "link", "bare", "fetch"]  # fetch: a URL in a tool call's arguments

# ``![alt]`` then a ``[label]``, an inline destination ``(`` or nothing (RE2: linear time on any text)
_IMAGE_REFERENCE = re2.compile(r"!\[([^\]\n]*)\](?:\[([^\]\n]*)\]|(\())?")

_URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&*+,;=%()")
_URL_CHARS_BACKSLASH = _URL_CHARS | {"\\"}
_AUTHORITY_CHARS = _URL_CHARS - {"/", "?", "#"}
_HOST_DOTS = "\u3002\uff0e\uff61"  # full stops IDNA reads as dots: ideographic, full-width, half-width
_MAX_AUTHORITY = 512
_TRAILING = ".,;:!?*" + _HOST_DOTS
_SLASHES = "/\\"
_RELATIVE_ANCHOR = (
    r"(?:\]\([ \t]*(?:\r?\n[ \t]*)?<?"  # ![a](//host  ![a]( <//host>
    r"|\]:[ \t]*<?"  # [ref]: //host
    r"|(?:src|href|srcset|poster|background|data|action)[ \t]*=[ \t]*\\?[\"']?"  # <img src="//host"
    r"|url\([ \t]*\\?[\"']?)"  # CSS url(//host)
    r"//[A-Za-z0-9\[%?]"  # "?": the matcher sees any other than ASCII character as one (an IDN host)
)
# an attribute value or markdown destination that holds a character reference (``&`` in it)
_ENTITY_DESTINATION = re2.compile(
    r"(?i)(?:\b(?:src|href|srcset|poster|background|data|action|formaction)[ \t]*=[ \t]*"
    r"(?:\"([^\"]*&[^\"]*)\"|'([^']*&[^']*)'|([^\s\"'>]*&[^\s\"'>]*))"
    r"|\]\([ \t]*<?([^)\s>]*&[^)\s>]*)"
    r"|\]:[ \t]*<?([^\s>]*&[^\s>]*))"
)
_URL_WHITESPACE = str.maketrans(dict.fromkeys("\t\n\r"))  # browsers drop these inside a URL
_MAX_ENTITY_URLS = 256  # per text: keeps a hostile one cheap
ENTITY_URL = "url_entities"  # the kind of a hit :func:`entity_urls` found
RULES: dict[Render, RuleInfo] = {
    "image": RuleInfo(
        id="abw-exfil-url-image",
        name="Data exfiltration through an auto-loading image URL",
        category="data_exfiltration",
        level="critical",
        description="The response renders an image whose URL on a foreign host carries conversation data; the "
        "client fetches it without a click.",
        atlas=("AML.T0077", "AML.T0057"),
        owasp=("LLM02:2025", "LLM05:2025"),
    ),
    "link": RuleInfo(
        id="abw-exfil-url-link",
        name="Data exfiltration through a link URL",
        category="data_exfiltration",
        level="high",
        description="The response or a tool call holds a link to a foreign host whose URL carries conversation data.",
        atlas=("AML.T0077", "AML.T0057"),
        owasp=("LLM02:2025", "LLM05:2025"),
    ),
}
_MIN_TRACED = 6  # shorter URL parts cannot hold a secret or PII value
_MIN_HOST_DATA = 12  # shorter host labels are names (``images``, ``example``), not data
# file extensions a path segment may end in, left off the data before it is decoded (``/<hex>.png``)
FILE_EXTENSIONS = frozenset(
    {"png", "gif", "jpg", "jpeg", "webp", "svg", "ico", "bmp", "avif", "tif", "tiff", "css", "js", "json"}
    | {"xml", "html", "htm", "txt", "pdf", "php", "asp", "aspx", "jsp"}
)


# passages a tool call's URL may not carry off-site: what the application read, not what the user typed
_LEAKED_SOURCES = frozenset({DOCUMENT, TOOL_RESULT, SYSTEM})
_FETCH_MIN_PASSAGE = 160  # characters, decoded: longer than a search query (about 32 words at most)
_URL_NAMES: dict[Render, str] = {
    "image": "an image URL",
    "link": "a link URL",
    "bare": "a bare URL",
    "fetch": "a URL in a tool call",
}


def _fetched_leak(flow: Flow, carrier: Carrier, url: str, index: ConversationIndex) -> bool:
    """Whether a flow into a URL a tool fetches is a leak. Secrets, PII, canaries and encoded passages count as in
    a link; a readable passage counts when it is not a search or a link followed: it comes from a document, a tool
    result or the system prompt (an agent searches for what the user asked, in any turn), it is longer than a
    search query, and the input did not hold the URL as it is (a link the page gave)."""
    if flow.what != "conversation" or any(t in ENCODINGS for t in flow.transforms):
        return True
    if flow.source_field not in _LEAKED_SOURCES or len(urllib.parse.unquote_plus(carrier.value)) < _FETCH_MIN_PASSAGE:
        return False
    written = url.lower()
    return not any(written in text for text, _ in index.texts)


def _url_extend(text: str, start: int, end: int) -> tuple[int, int]:
    """The URL whose anchor is ``text[start:end]`` (its scheme, slashes and the host's first character): the
    authority, where a host may be written in any script (an IDN, full-width dots), then the rest in URL
    characters."""
    allowed = _URL_CHARS_BACKSLASH if "\\" in text[start:end] else _URL_CHARS  # https:\\host\\path loads as /
    _, right = extend_over(allowed, 8192)(text, start, _authority_end(text, end - 1))
    while right > end and (text[right - 1] in _TRAILING or (text[right - 1] == ")" and "(" not in text[start:right])):
        right -= 1
    return start, right


def _authority_end(text: str, position: int) -> int:
    """Where the authority (user-info, host, port) that starts at ``position`` ends: ASCII URL characters other
    than ``/ ? #``, and letters, digits and marks of any script and the full stops IDNA reads as dots."""
    stop = min(len(text), position + _MAX_AUTHORITY)
    while position < stop:
        char = text[position]
        ascii_char = char.isascii()
        if (ascii_char and char not in _AUTHORITY_CHARS) or (not ascii_char and not _host_char(char)):
            break
        position += 1
    return position


def _host_char(char: str) -> bool:
    return char in _HOST_DOTS or unicodedata.category(char)[0] in "LMN"


def _relative_extend(text: str, start: int, end: int) -> tuple[int, int]:
    """The protocol-relative URL inside an anchor that also matched its markdown / HTML context."""
    return _url_extend(text, text.find("//", start, end), end)


def canonical_url(token: str) -> str:
    """``token`` as a browser reads it: ``https:\\\\host``, ``https:////host`` and ``//host`` (protocol-relative,
    https on an https page) all load ``https://host``."""
    scheme, _, rest = ("https", "", token) if token.startswith(tuple(_SLASHES)) else token.partition(":")
    return f"{scheme.lower()}://{rest.lstrip(_SLASHES).replace(_SLASHES[1], '/')}"


def _url(token: str, _text: str, _start: int) -> Valid | None:
    url = browser_url(token)
    if url is None:
        return None
    host = urllib.parse.urlsplit(url).hostname or ""
    return Valid(token, url) if "." in host or host == "localhost" or host.startswith("[") else None


def browser_url(token: str) -> str | None:
    """``token`` as the browser loads it: :func:`canonical_url` with its host canonical (:func:`canonical_host`:
    an IDN in punycode, full-width dots and ``%2E`` as dots, a numeric IPv4 address dotted), or None when no
    browser would load it."""
    url = canonical_url(token)
    try:
        netloc = urllib.parse.urlsplit(url).netloc
    except ValueError:
        return None
    userinfo, at, host_port = netloc.rpartition("@")
    host, colon, port = host_port.rpartition(":") if host_port.count(":") == 1 else (host_port, "", "")
    canonical = canonical_host(host) if host else None
    if canonical is None:
        return None
    if canonical == host.lower():
        return url
    return url.replace(netloc, f"{userinfo}{at}{canonical}{colon}{port}", 1)


def url_specs() -> list[Spec]:
    """URL anchors; a hit's value is the URL as written, its key the URL as the browser loads it.

    Browsers read any mix of two to four slashes and backslashes after ``http:`` / ``https:`` as ``//``. A
    protocol-relative ``//host`` is taken only where it is loaded or linked (markdown destination or reference
    definition, HTML attribute, CSS ``url()``), since ``//`` alone also starts code comments."""
    return [
        Spec("url", "url", r"https?:[/\\]{2}[/\\]{0,2}[A-Za-z0-9\[%?]", _url, _url_extend, caseless=True),
        Spec("url", "url", _RELATIVE_ANCHOR, _url, _relative_extend, caseless=True),
    ]


def entity_urls(text: str) -> list[Hit]:
    """URLs in HTML attribute values and markdown destinations written with character references (``&#104;ttps:``,
    ``&colon;``, ``&period;``): browsers and CommonMark decode those before they read the URL, so the anchors, which
    read the text as written, miss them. Each hit spans the value as written; its key is the URL decoded."""
    if "&" not in text:
        return []
    hits: list[Hit] = []
    utf8 = text.encode("utf-8", "replace").decode("utf-8")  # RE2 reads UTF-8: a lone surrogate becomes one "?"
    for match in itertools.islice(_ENTITY_DESTINATION.finditer(utf8), _MAX_ENTITY_URLS):
        group = next(number for number in range(1, 6) if match.group(number) is not None)
        written = text[match.start(group) : match.end(group)]
        decoded = html.unescape(written).strip(" \t\n\r\f").translate(_URL_WHITESPACE).split(" ")[0]
        if decoded == written or not decoded.lower().startswith(("http:", "https:", "//", "\\\\")):
            continue
        valid = _url(decoded, text, match.start(group))
        if valid is not None:
            start = match.start(group)
            hits.append(Hit(ENTITY_URL, "url", start, start + len(written), written, valid.key, True))
    return hits


def render_kind(text: str, start: int) -> Render:
    """How a client shows the URL at ``start``: auto-loaded image, clickable link, or bare text."""
    before = text[max(0, start - 400) : start]
    destination = before.removesuffix("<").rstrip()  # CommonMark: ![a]( url) and ![a](<url>) load url too
    if destination.endswith("]("):
        opening = destination.rfind("[", 0, len(destination) - 2)
        return "image" if opening > 0 and destination[opening - 1] == "!" else "link"
    tag_start = before.rfind("<")
    if tag_start >= 0 and ">" not in before[tag_start:]:
        tag = before[tag_start:].lower()
        if tag.startswith(("<img", "<image", "<source", "<video", "<audio", "<iframe")) or "src=" in tag:
            return "image"
        return "link"
    line_start = before.rfind("\n") + 1
    line = before[line_start:].strip()
    if line.startswith("[") and line.endswith(":") and "]" in line:
        reference = _label(line[1 : line.index("]")])
        return "image" if reference in image_labels(text) else "link"
    return "bare"


@functools.lru_cache(maxsize=8)  # one text, many reference definitions: scanned once
def image_labels(text: str) -> frozenset[str]:
    """The reference labels that images load (CommonMark's three forms): full ``![alt][label]``, collapsed
    ``![label][]`` and shortcut ``![label]``, each as :func:`_label` normalises it. One linear scan: a response of
    thousands of definitions and references is read once, not once per definition."""
    labels = set()
    for match in _IMAGE_REFERENCE.finditer(text):
        alt, label, inline = match.groups()
        if inline is None:  # ``![alt](url)`` is an inline image, not a reference
            labels.add(_label(label or alt))
    return frozenset(labels)


def _label(reference: str) -> str:
    """A reference label as CommonMark matches it: case-folded, inner whitespace collapsed."""
    return " ".join(reference.split()).casefold()


@dataclass(frozen=True, slots=True)
class Carrier:
    """A place in a URL that can hold data: a query parameter value, a path segment, the fragment, the subdomain
    labels or the user-info."""

    where: str  # e.g. "query parameter d", "path segment 3"
    value: str  # as written in the URL (still percent-encoded)


def carriers(url: str) -> list[Carrier]:
    """Every data-bearing part of ``url``, raw; decoding is the tracer's job."""
    parts = urllib.parse.urlsplit(url)
    found = []
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value:
            found.append(Carrier(f"query parameter {urllib.parse.unquote_plus(name)[:40] or '(unnamed)'}", value))
    for position, segment in enumerate(parts.path.split("/")):
        stem, dot, extension = segment.rpartition(".")
        if dot and extension.lower() in FILE_EXTENSIONS and len(stem) >= _MIN_TRACED:
            found.append(Carrier(f"path segment {position} (before .{extension})", stem))
        elif segment:
            found.append(Carrier(f"path segment {position}", segment))
    if parts.fragment:
        found.append(Carrier("fragment", parts.fragment))
    found.extend(_host_carriers(parts))
    return found


def _host_carriers(parts: urllib.parse.SplitResult) -> list[Carrier]:
    """Data in the host name (DNS exfiltration: ``<hex>.attacker.example`` is resolved, and logged, by the
    attacker's name server before any request is made) and in the user-info (``https://<data>@host/``).

    Labels left of the last two are taken as the data, each alone and joined (data longer than a label's 63
    characters is split over several); a public suffix of two labels (``co.uk``) only shortens what is read."""
    found = host_label_carriers(parts.hostname or "")
    for where, value in (("user name", parts.username), ("password", parts.password)):
        if value:
            found.append(Carrier(where, value))
    return found


def host_label_carriers(host: str) -> list[Carrier]:
    """The subdomain labels of ``host`` that can hold data, each alone and joined. Joined, they are read twice: all
    of them, and all but the last, which is often the attacker's routing label (``<data>.<data>.x.attacker.io``)
    and would leave a whole encoding one character off."""
    labels = host.lower().split(".")[:-2]
    found = [Carrier(f"subdomain label {i}", label) for i, label in enumerate(labels) if len(label) >= _MIN_HOST_DATA]
    for where, joined in (("subdomain labels joined", labels), ("subdomain labels joined but the last", labels[:-1])):
        if len(joined) > 1 and len(value := "".join(joined)) >= _MIN_HOST_DATA:
            found.append(Carrier(where, value))
    return found


def _written(carrier: Carrier, url: str) -> str:
    """The text of ``url`` as written that holds ``carrier``: for subdomain labels (joined ones are not written as
    such, and a piece of an encoding alone is no flow of its own) the whole authority, so no label stays readable."""
    if not carrier.where.startswith("subdomain label"):
        return carrier.value
    try:
        return urllib.parse.urlsplit(canonical_url(url)).netloc or carrier.value
    except ValueError:
        return carrier.value


def shown_host(host: str) -> str:
    """``host`` with each subdomain label that can hold data shown as its length: a message names the domain data
    went to, never the data (``[40 chars].[40 chars].x.attacker.io``)."""
    labels = host.split(".")
    data = [f"[{len(label)} chars]" if len(label) >= _MIN_HOST_DATA else label for label in labels[:-2]]
    return ".".join([*data, *labels[-2:]])


def opaque_data(value: str, min_length: int, min_entropy: float) -> tuple[str, ...] | None:
    """The transforms under which ``value`` reads as smuggled data, or None when it looks like an ordinary token."""
    if len(value) < min_length:
        return None
    for text, transforms in decoded_forms(value):
        if transforms and transforms[-1] in ENCODINGS and len(text) >= min_length // 2:
            return transforms
        if transforms == ("url",) and len(words(text)) >= 8:
            return transforms
    return ("entropy",) if shannon_entropy(value) >= min_entropy else None


class UrlExfilCheck:
    """Raises ``data_exfiltration`` for URLs in the response or tool arguments that carry data off-site."""

    def __init__(self, tracer: FlowTracer, *, min_length: int, min_entropy: float) -> None:
        self.tracer = tracer
        self.min_length = min_length
        self.min_entropy = min_entropy

    def run(
        self, context: EventContext, findings: Findings, masker: Masker, index: list[ConversationIndex]
    ) -> list[Detection]:
        detections = []
        for segment, hit in self._hits(context):
            detection = self._check(context, findings, segment, hit, masker, index)
            if detection is not None:
                detections.append(detection)
        return detections

    @staticmethod
    def _hits(context: EventContext) -> Iterator[tuple[Segment, Hit]]:
        """The URLs of the response and tool calls; in the response, also those written with character
        references that no anchor found (:func:`entity_urls`)."""
        for segment in context.segments:
            if segment.side != "output" or segment.field not in (COMPLETION, TOOL_ARGUMENTS):
                continue
            found = [hit for hit in segment.hits if hit.family == "url"]
            yield from ((segment, hit) for hit in found)
            if segment.field == COMPLETION:
                for hit in entity_urls(segment.text):
                    if not any(hit.start <= other.start < hit.end for other in found):
                        yield segment, hit

    def _check(
        self,
        context: EventContext,
        findings: Findings,
        segment: Segment,
        hit: Hit,
        masker: Masker,
        index: list[ConversationIndex],
    ) -> Detection | None:
        url = hit.key  # as the browser loads it
        try:
            host = (urllib.parse.urlsplit(url).hostname or "").lower()
        except ValueError:
            return None
        if context.profile.domain_allowed(host):
            return None
        render = render_kind(segment.text, hit.start) if segment.field == COMPLETION else "fetch"
        found: list[tuple[Carrier, list[Flow], tuple[str, ...] | None]] = []
        user_keys = context.user_keys()
        for carrier in carriers(url):
            opaque = opaque_data(carrier.value, self.min_length, self.min_entropy)
            if len(carrier.value) < _MIN_TRACED and opaque is None:
                continue
            if not index:
                index.append(self.tracer.index(context, context.earlier))
            flows = [f for f in self.tracer.trace(carrier.value, index[0]) if self._counts(f, render, user_keys)]
            if render == "fetch":
                flows = [flow for flow in flows if _fetched_leak(flow, carrier, hit.value, index[0])]
            if flows or opaque:
                found.append((carrier, flows, opaque))
            if any(flow.transforms and flow.what != "conversation" for flow in flows):
                findings.sensitive.append(SensitiveValue(kind="encoded_data", value=_written(carrier, hit.value)))
        if not found:
            return None
        if hit.kind == ENTITY_URL and any(f.what != "conversation" for _, flows, _ in found for f in flows):
            findings.sensitive.append(SensitiveValue(kind="encoded_data", value=hit.value))  # references hide it
        level = self._level(render, found)
        if level is None:
            return None
        rule = RULES["image" if render == "image" else "link"]
        rule = msgspec.structs.replace(rule, level=level)
        return self._detection(context, segment, hit, host, render, rule, found, masker)

    @staticmethod
    def _counts(flow: Flow, render: Render, user_keys: set[str]) -> bool:
        """Whether a flow counts for this URL. Links (a click away) often cite their source: a readable passage
        (a slug, a search query) counts only in an auto-loading image, in a URL a tool fetches (no click either: an
        injected agent told to "fetch https://attacker/?q=<the document>") or when it was encoded to hide it; PII
        the user typed in counts only in an image."""
        if render == "image":
            return True
        if flow.what == "pii":
            return flow.key not in user_keys
        if flow.what == "conversation":
            return render == "fetch" or any(t in ENCODINGS for t in flow.transforms)
        return True

    @staticmethod
    def _level(render: Render, found: list[tuple[Carrier, list[Flow], tuple[str, ...] | None]]) -> str | None:
        whats = {flow.what for _, flows, _ in found for flow in flows}
        if whats & {"secret", "canary"}:
            return "critical"
        if whats:
            return "critical" if render == "image" else "high"
        return "medium" if render == "image" else None

    @staticmethod
    def _detection(
        context: EventContext,
        segment: Segment,
        hit: Hit,
        host: str,
        render: Render,
        rule: RuleInfo,
        found: list[tuple[Carrier, list[Flow], tuple[str, ...] | None]],
        masker: Masker,
    ) -> Detection:
        event = context.event
        shown = hit.key if hit.kind == ENTITY_URL else hit.value  # decoded, so the carriers below are found in it
        evidence: list[Evidence] = []
        details = []
        for carrier, flows, opaque in found:
            if carrier.value:
                shown = shown.replace(carrier.value, f"[{len(carrier.value)} chars]")
            for flow in flows:
                transforms = flow.transforms
                place = f"{render} URL {carrier.where}" + (f" ({'+'.join(transforms)})" if transforms else "")
                detail = f"{flow.what} ({flow.kind}) {flow.origin()}; leaked in {place} to {host}"
                details.append(detail)
                if flow.source_field:
                    evidence.append(Evidence(field=flow.source_field, snippet=f"[{flow.kind}]", detail=detail))
            if not flows and opaque:
                details.append(f"opaque data ({'+'.join(opaque)}) in {render} URL {carrier.where} to {host}")
        snippet = masker.excerpt(shown)
        transforms = tuple(sorted({t for _, flows, _ in found for f in flows for t in f.transforms}))
        if hit.kind == ENTITY_URL:
            transforms = ("html_entities", *transforms)
        evidence.insert(
            0,
            Evidence(
                field=segment.field,
                snippet=snippet,
                start=hit.start,
                end=hit.end,
                transforms=transforms,
                detail="; ".join(details)[:1000],
            ),
        )
        whats = sorted({flow.what for _, flows, _ in found for flow in flows}) or ["opaque data"]
        return Detection(
            rule=rule,
            event_ids=[event.id],
            timestamp=event.timestamp,
            identity=event.identity,
            message=f"{', '.join(whats)} sent to {host} in {_URL_NAMES[render]}",
            score=1.0 if rule.level == "critical" else 0.8 if rule.level == "high" else 0.5,
            evidence=evidence,
        )
