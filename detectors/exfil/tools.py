"""Tool-call exfiltration: an agent asked to send conversation data to an outside destination.

A tool call counts as egress when its name says so (send, email, post, webhook, upload, share, fetch ...). Its
destinations are the URLs and e-mail addresses in its arguments; a destination is external unless its domain is
on the application's allowlist. Egress to an external destination whose arguments carry data from the
conversation (secrets, PII the user did not type in, passages of tool results, documents or earlier turns, canary
tokens) is ``data_exfiltration``; egress to a known exfiltration sink or a bare IP address without identifiable
data is ``tool_abuse``. An argument that is just one of those external destinations is the URL check's job; every
other argument value is traced, a message body holding a link included. An argument that is just a URL to an
allowed host is traced for secrets, PII and canaries but not for passages (a link copied from a document is a
citation, not a copy of it).

A shell tool (``run_shell``, ``bash``, ``execute`` ...) is an egress tool when its command runs an HTTP client (curl,
wget, PowerShell's Invoke-WebRequest): the command is traced for secrets, PII and canaries, and the value of each
upload option (``curl -d``, ``--data-binary``, ``-F``, ``-T``, ``wget --post-data``, ``-Body`` ...) for passages too.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Iterator
from typing import Any

import msgspec
import orjson
import re2

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import TOOL_ARGUMENTS, ToolCall
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.flows import ConversationIndex, Flow, FlowTracer
from detectors.exfil.masking import Masker

EXFIL_RULE = RuleInfo(
    id="abw-exfil-tool-call",
    name="Data exfiltration through an agent tool call",
    category="data_exfiltration",
    level="high",
    description="The model called an egress tool (mail, HTTP, upload, share) towards an external destination with "
    "data from the conversation in its arguments.",
    atlas=("AML.T0086",),
    owasp=("LLM06:2025", "LLM02:2025"),
)
ODD_EGRESS_RULE = RuleInfo(
    id="abw-exfil-tool-odd-destination",
    name="Agent tool call to an exfiltration sink",
    category="tool_abuse",
    level="medium",
    description="The model called an egress tool towards a known request-capture service or a bare IP address.",
    atlas=("AML.T0086",),
    owasp=("LLM06:2025",),
)
_SPLIT = str.maketrans({ch: " " for ch in "_-./:"})
SHELL_TOOL_WORDS = frozenset(
    {"shell", "bash", "sh", "zsh", "powershell", "pwsh", "cmd", "terminal", "console", "exec", "execute", "command"}
    | {"subprocess", "interpreter"}
)
HTTP_CLIENTS = frozenset({"curl", "wget", "wget2", "invoke-webrequest", "invoke-restmethod", "iwr", "irm"})
UPLOAD_OPTIONS = frozenset(  # case-sensitive: curl -f is --fail, -F a form field
    {"-d", "--data", "--data-raw", "--data-binary", "--data-ascii", "--data-urlencode", "--json", "-F", "--form"}
    | {"--form-string", "-T", "--upload-file", "--post-data", "--post-file", "--body-data", "--body-file"}
)
POWERSHELL_UPLOAD_OPTIONS = frozenset({"-body", "-infile"})  # PowerShell parameters ignore case
_ATTACHED_SHORT_OPTIONS = ("-d", "-F", "-T")  # curl -d'a=1'
_SHELL_WORD = re2.compile(r"""(?:[^\s'"\\|;&()<>]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.)+""")
_WORD_PART = re2.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\(.)|([^'"\\]+)""")


def name_words(name: str) -> set[str]:
    """``sendEmail`` / ``http.post`` / ``upload_file`` as lower-case words."""
    spaced = "".join(f" {ch}" if ch.isupper() else ch for ch in name)
    return set(spaced.translate(_SPLIT).lower().split())


def string_leaves(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(json path, string)`` for every string in parsed tool arguments."""
    if isinstance(node, str):
        yield path or "(arguments)", node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from string_leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            yield from string_leaves(value, f"{path}[{position}]")


def parse_arguments(arguments: str) -> Any:
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def is_just_url(value: str) -> bool:
    """Whether ``value`` is one URL and nothing else (no words around it)."""
    token = value.strip()
    if not token or any(ch.isspace() for ch in token):
        return False
    try:
        parts = urllib.parse.urlsplit(token)
    except ValueError:
        return False
    return bool(parts.scheme and parts.netloc)


def shell_words(command: str) -> list[str]:
    """``command`` split as a POSIX shell would: quotes removed, ``|``, ``;``, ``&&`` and redirections apart.

    RE2 does the splitting in linear time (``shlex`` is quadratic in the length of a word, and a command can carry
    a whole document); an unbalanced quote is skipped rather than refused, so the words still show the intent."""
    utf8 = command.encode("utf-8", "replace").decode("utf-8")  # RE2 reads UTF-8: a lone surrogate becomes "?"
    return [_unquote(match.group(0)) for match in _SHELL_WORD.finditer(utf8)]


def _unquote(word: str) -> str:
    if not any(ch in word for ch in "'\"\\"):
        return word
    parts = []
    for match in _WORD_PART.finditer(word):
        single, double, escaped, plain = match.groups()
        if double is not None:
            parts.append(double.replace('\\"', '"').replace("\\\\", "\\"))
        else:
            parts.append(next(part for part in (single, escaped, plain) if part is not None))
    return "".join(parts)


def http_uploads(command: str) -> list[tuple[str, str]] | None:
    """``(option, value)`` of every upload option in ``command`` when it runs an HTTP client, else None."""
    lowered = command.lower()
    if not any(client in lowered for client in HTTP_CLIENTS):
        return None
    words = shell_words(command)
    programs = {  # the plain split keeps Windows paths (C:\\tools\\curl.exe), which POSIX quoting would mangle
        word.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].strip("\"'").lower().removesuffix(".exe")
        for word in (*words, *command.split())
    }
    if not programs & HTTP_CLIENTS:
        return None
    uploads = []
    for position, word in enumerate(words):
        option, equals, attached = word.partition("=")
        if option in UPLOAD_OPTIONS or option.lower() in POWERSHELL_UPLOAD_OPTIONS:
            value = attached if equals else (words[position + 1] if position + 1 < len(words) else "")
        elif word.startswith(_ATTACHED_SHORT_OPTIONS) and len(word) > 2:
            option, value = word[:2], word[2:]
        else:
            continue
        if value:
            uploads.append((option, value))
    return uploads


def host_is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class ToolExfilCheck:
    def __init__(self, tracer: FlowTracer, *, egress_words: tuple[str, ...], sink_domains: tuple[str, ...]) -> None:
        self.tracer = tracer
        self.egress_words = frozenset(egress_words)
        self.sink_domains = tuple(sink_domains)

    def run(
        self, context: EventContext, findings: Findings, masker: Masker, index: list[ConversationIndex]
    ) -> list[Detection]:
        calls = context.event.output_tool_calls()
        detections = []
        for segment in context.segments:
            if segment.field != TOOL_ARGUMENTS or segment.tool_call_index is None:
                continue
            call = calls[segment.tool_call_index]
            words = name_words(call.name)
            shell = bool(words & SHELL_TOOL_WORDS)
            if not (words & self.egress_words or shell):
                continue
            arguments = list(string_leaves(parse_arguments(segment.text)))
            uploads: dict[str, list[tuple[str, str]]] = {}
            if shell:
                uploads = {path: found for path, value in arguments if (found := http_uploads(value)) is not None}
                if not (words & self.egress_words or uploads):
                    continue
            detection = self._check(context, findings, call, segment, arguments, uploads, masker, index)
            if detection is not None:
                detections.append(detection)
        return detections

    def _destinations(self, context: EventContext, segment: Segment) -> list[tuple[str, str]]:
        """``(what, domain)`` of every external destination named in the arguments."""
        found = []
        for hit in segment.hits:
            if hit.kind == "url":
                try:
                    host = (urllib.parse.urlsplit(hit.key).hostname or "").lower()
                except ValueError:
                    continue
                if host and not context.profile.domain_allowed(host):
                    found.append((hit.value, host))
            elif hit.kind == "email":
                domain = hit.key.rpartition("@")[2]
                if not context.profile.email_domain_allowed(domain):
                    found.append((hit.value, domain))
        return found

    def _check(
        self,
        context: EventContext,
        findings: Findings,
        call: ToolCall,
        segment: Segment,
        arguments: list[tuple[str, str]],
        uploads: dict[str, list[tuple[str, str]]],
        masker: Masker,
        index: list[ConversationIndex],
    ) -> Detection | None:
        """``arguments`` are the ``(path, string)`` leaves of the call's arguments, ``uploads`` the upload options
        of the shell commands among them, by path."""
        destinations = self._destinations(context, segment)
        if not destinations:
            return None
        if not index:
            index.append(self.tracer.index(context, context.earlier))
        addresses = {value for value, _ in destinations}
        user_keys = context.user_keys()
        flows: dict[Flow, str] = {}  # each flow once, with the first argument it was found in
        for path, value, passages in self._traced_values(arguments, uploads, addresses):
            traced = [
                flow
                for flow in self.tracer.trace(value, index[0], passages=passages)
                if flow.what != "pii" or flow.key not in user_keys
            ]
            if any(flow.transforms and flow.what != "conversation" for flow in traced):
                findings.sensitive.append(SensitiveValue(kind="encoded_data", value=value))
                masker = Masker([*masker.values, ("encoded_data", value)])
            for flow in traced:
                flows.setdefault(flow, path)
        hosts = sorted({domain for _, domain in destinations})
        if flows:
            return self._exfil(context, call, segment, hosts, [(path, flow) for flow, path in flows.items()], masker)
        odd = [h for h in hosts if host_is_ip(h) or any(h == d or h.endswith("." + d) for d in self.sink_domains)]
        if odd:
            return Detection(
                rule=ODD_EGRESS_RULE,
                event_ids=[context.event.id],
                timestamp=context.event.timestamp,
                identity=context.event.identity,
                message=f"tool {call.name} sends to {', '.join(odd)}",
                score=0.6,
                evidence=[
                    Evidence(
                        field=TOOL_ARGUMENTS,
                        snippet=masker.excerpt(segment.text),
                        detail=f"egress tool {call.name} to {', '.join(odd)}",
                    )
                ],
            )
        return None

    @staticmethod
    def _traced_values(
        arguments: list[tuple[str, str]], uploads: dict[str, list[tuple[str, str]]], addresses: set[str]
    ) -> Iterator[tuple[str, str, bool]]:
        """``(path, value, whether passages count)`` for every argument value to trace."""
        for path, value in arguments:
            if value.strip() in addresses:
                continue
            if path in uploads:
                yield path, value, False
                for option, payload in uploads[path]:
                    yield f"{path} {option}", payload, True
                    for name, _, field in (pair.partition("=") for pair in payload.split("&") if "=" in payload):
                        if field:  # form fields (curl -d 'k=v&k2=v2'): each value may be encoded on its own
                            yield f"{path} {option} {name[:40]}", field, True
            else:
                yield path, value, not is_just_url(value)

    @staticmethod
    def _exfil(
        context: EventContext,
        call: ToolCall,
        segment: Segment,
        hosts: list[str],
        flows: list[tuple[str, Flow]],
        masker: Masker,
    ) -> Detection:
        whats = {flow.what for _, flow in flows}
        level = "critical" if whats & {"secret", "canary"} else "high"
        evidence = [
            Evidence(
                field=TOOL_ARGUMENTS,
                snippet=masker.excerpt(segment.text),
                transforms=tuple(sorted({t for _, f in flows for t in f.transforms})),
                detail=f"egress tool {call.name} to {', '.join(hosts)}",
            )
        ]
        for path, flow in flows:
            transforms = f" ({'+'.join(flow.transforms)})" if flow.transforms else ""
            detail = f"{flow.what} ({flow.kind}) {flow.origin()}; sent in tool {call.name} argument {path}{transforms}"
            evidence.append(
                Evidence(
                    field=flow.source_field or TOOL_ARGUMENTS,
                    snippet=f"[{flow.kind}]",
                    transforms=flow.transforms,
                    detail=detail,
                )
            )
        return Detection(
            rule=msgspec.structs.replace(EXFIL_RULE, level=level),
            event_ids=[context.event.id],
            timestamp=context.event.timestamp,
            identity=context.event.identity,
            message=f"tool {call.name} sends {', '.join(sorted(whats))} to {', '.join(hosts)}",
            score=1.0 if level == "critical" else 0.85,
            evidence=evidence,
        )
