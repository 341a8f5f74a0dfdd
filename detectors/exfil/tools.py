"""Tool-call exfiltration: an agent asked to send conversation data to an outside destination.

A tool call counts as egress when its name says so (send, email, post, webhook, upload, share, fetch ...). Its
destinations are the URLs and e-mail addresses in its arguments; a destination is external unless its domain is
on the application's allowlist. Egress to an external destination whose arguments carry data from the
conversation (secrets, PII the user did not type in, passages of tool results, documents or earlier turns, canary
tokens) is ``data_exfiltration``; egress to a known exfiltration sink or a bare IP address without identifiable
data is ``tool_abuse``. An argument that is just one of those external destinations is the URL check's job; every
other argument value is traced, a message body holding a link included. An argument that is just a URL to an
allowed host is traced for secrets, PII and canaries but not for passages (a link copied from a document is a
citation, not a copy of it). A tool that writes to a shared resource (a repository, a channel, a space) names no
such destination: :mod:`detectors.exfil.resources` judges it.

A shell tool (``run_shell``, ``bash``, ``execute`` ...) is an egress tool when its command runs an HTTP client (curl,
wget, PowerShell's Invoke-WebRequest), a DNS or network client (dig, nslookup, host, ping, nc, ssh, scp, rsync ...)
or a Python / Node one-liner that makes requests: the command is traced for secrets, PII and canaries, and the value
of each upload option (``curl -d``, ``--data-binary``, ``-F``, ``-T``, ``wget --post-data``, ``-Body`` ...) for
passages too. A network client's destinations are the host names and addresses it is given (``dig <labels>.host``,
``scp f user@host:/path``); their subdomain labels are traced as a URL's are (DNS exfiltration: the name server of
the attacker's domain logs the labels of every name resolved), counting a passage only when it was encoded. Hosts of
this machine or its network (``localhost``, private addresses, one-label names, ``.local`` / ``.internal``) are not
destinations.
"""

from __future__ import annotations

import ipaddress
import itertools
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import orjson
import re2

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import TOOL_ARGUMENTS, ToolCall
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.decoding import ENCODINGS
from detectors.exfil.flows import ConversationIndex, Flow, FlowTracer
from detectors.exfil.masking import Masker
from detectors.exfil.resources import PassageFinder, ResourceWriteCheck, is_write
from detectors.exfil.urls import FILE_EXTENSIONS, host_label_carriers, shown_host

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
# a shell word, or an operator that starts a new simple command
_COMMAND_TOKEN = re2.compile(r"""(?:[^\s'"\\|;&()<>`]+|'[^']*'|"(?:[^"\\]|\\.)*"|\\.)+|[|;&()`\n]""")
_COMMAND_PREFIXES = frozenset({"sudo", "doas", "env", "nohup", "time", "exec", "command", "nice", "timeout", "xargs"})
NETWORK_CLIENTS = frozenset(  # programs that reach a host by name: DNS lookups, ping, raw sockets, remote shells
    {"dig", "drill", "kdig", "nslookup", "host", "resolve-dnsname", "ping", "ping6", "traceroute", "test-connection"}
    | {"test-netconnection", "nc", "ncat", "netcat", "socat", "telnet", "ssh", "scp", "sftp", "rsync", "ftp", "tftp"}
)
INTERPRETERS = frozenset({"python", "python3", "python2", "node", "nodejs"})
_INLINE_CODE_OPTIONS = frozenset({"-c", "-e", "--eval", "-p", "--print"})
_HTTP_CODE_MARKERS = (
    *("urllib", "requests.", "http.client", "httpx", "urlopen", "socket"),  # Python
    *("fetch(", "http.get", "https.get", "http.request", "https.request", "axios"),  # Node
)
_HOST_WORD = re2.compile(r"[a-z0-9_][a-z0-9_-]{0,62}(?:\.[a-z0-9_-]{1,63})+")
# a word ending so is a file (``f.tar.gz``), unless written as a remote (``user@host.sh:``) or, for the endings that
# are also top-level domains, made of three labels or more (``x.evil.sh``)
_FILE_SUFFIXES = FILE_EXTENSIONS | {"rb", "go", "env", "yml", "yaml", "toml", "ini", "cfg", "conf", "log", "csv", "sql"}
_FILE_SUFFIXES |= {"db", "gz", "tgz", "tar", "bz2", "xz", "key", "pem", "crt", "lock", "bak", "out", "tmp", "pyc"}
_FILE_OR_DOMAIN_SUFFIXES = frozenset({"sh", "py", "rs", "md", "zip", "mov"})
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")  # names that never leave the network
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


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of ``command`` (split at ``|``, ``;``, ``&``, parentheses, backquotes and new lines),
    each as its unquoted words from the program on: ``sudo``, ``env``, ``timeout 5``, ``VAR=value`` and options
    before the program are left out."""
    utf8 = command.encode("utf-8", "replace").decode("utf-8")
    found: list[list[str]] = [[]]
    for match in _COMMAND_TOKEN.finditer(utf8):
        token = match.group(0)
        if len(token) == 1 and token in "|;&()`\n":
            if found[-1]:
                found.append([])
        elif found[-1] or not _is_prefix(token):
            found[-1].append(_unquote(token))
    return [words for words in found if words]


def _is_prefix(token: str) -> bool:
    return program_name(token) in _COMMAND_PREFIXES or "=" in token or token.startswith("-") or token.isdigit()


def program_name(word: str) -> str:
    """``/usr/bin/dig``, ``C:\\tools\\nc.exe`` and ``"dig"`` as ``dig`` (lower case, as Windows reads it)."""
    return word.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].strip("\"'").lower().removesuffix(".exe")


def runs_http_code(words: list[str]) -> bool:
    """Whether a simple command is a Python or Node one-liner (``python3 -c``, ``node -e``) that makes requests."""
    if program_name(words[0]) not in INTERPRETERS:
        return False
    code = " ".join(after for option, after in itertools.pairwise(words) if option in _INLINE_CODE_OPTIONS)
    return any(marker in code.lower() for marker in _HTTP_CODE_MARKERS)


def remote_host(word: str) -> str | None:
    """The host a network client's argument names (``host.example``, ``user@host:/path``, ``@resolver``) as
    written, or None when the word is no host: an option, a file name (``notes.txt``), a number, a one-label name."""
    if word.startswith(("-", "+")) or "=" in word:
        return None
    written = word.rpartition("@")[2].partition(":")[0].rstrip(".")
    host = written.lower()
    if not _HOST_WORD.fullmatch(host):
        return None
    labels = host.split(".")
    if all(label.isdigit() for label in labels):
        return written if host_is_ip(host) else None
    top = labels[-1]
    if not (top.isalpha() or top.startswith("xn--")):  # a top-level domain is letters, or punycode
        return None
    if "@" in word or ":" in word:  # a remote: user@host, host:path
        return written
    file_like = top in _FILE_SUFFIXES or (len(labels) == 2 and top in _FILE_OR_DOMAIN_SUFFIXES)
    return None if file_like else written


def network_hosts(command: str) -> list[str] | None:
    """The hosts that the network clients of ``command`` are given, as written, or None when it runs no network
    client."""
    hosts: list[str] | None = None
    for words in simple_commands(command):
        if program_name(words[0]) in NETWORK_CLIENTS:
            hosts = hosts or []
            hosts += [host for word in words[1:] if (host := remote_host(word)) is not None]
    return hosts


def is_local_host(host: str) -> bool:
    """Whether ``host`` is this machine or its network: a non-global address or a local-only name."""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return host == "localhost" or host.endswith(_LOCAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class ShellEgress:
    """What a shell command sends out: its HTTP clients' upload options and the hosts its network clients name."""

    uploads: list[tuple[str, str]]
    hosts: list[str]


def shell_egress(command: str) -> ShellEgress | None:
    """The egress of ``command``, or None when it runs no HTTP client, network client or requesting one-liner."""
    uploads = http_uploads(command)
    hosts = network_hosts(command)
    if uploads is None and hosts is None and not any(runs_http_code(words) for words in simple_commands(command)):
        return None
    return ShellEgress(uploads or [], [host for host in hosts or [] if not is_local_host(host.lower())])


def host_is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


Passages = Literal["any", "encoded", "none"]  # which passages of the conversation count in a traced value


def _counts(flow: Flow, passages: Passages) -> bool:
    """Whether a flow counts where ``passages`` of the conversation do. A host name's label counts a passage only
    when it was encoded: a readable label is a name the conversation may well hold (``dig api-gateway-eu.acme.io``
    after a tool listed it)."""
    return flow.what != "conversation" or passages != "encoded" or any(t in ENCODINGS for t in flow.transforms)


@dataclass(frozen=True, slots=True)
class Destination:
    """An external destination of a tool call: ``written`` as in the arguments, ``host`` the domain judged;
    ``named`` when a network client was given it by name (no URL or address), which alone is no odd sign."""

    written: str
    host: str
    named: bool = False


@dataclass(frozen=True, slots=True)
class Traced:
    """One value to trace: where it sits (``path``), which passages count, and the text as written that holds it
    (what is masked when it hides data: the whole host name for a DNS label)."""

    path: str
    value: str
    passages: Passages
    written: str


class ToolExfilCheck:
    """Egress tools towards external destinations; writes to shared resources are handed to :mod:`resources`."""

    def __init__(self, tracer: FlowTracer, *, egress_words: tuple[str, ...], sink_domains: tuple[str, ...]) -> None:
        self.tracer = tracer
        self.egress_words = frozenset(egress_words)
        self.sink_domains = tuple(sink_domains)
        self.writes = ResourceWriteCheck(tracer, lambda arguments: list(string_leaves(parse_arguments(arguments))))

    def run(
        self, context: EventContext, findings: Findings, masker: Masker, index: list[ConversationIndex]
    ) -> list[Detection]:
        calls = context.event.output_tool_calls()
        detections = []
        finder: list[PassageFinder] = []  # what the event read from which resource, built on first need
        for segment in context.segments:
            if segment.field != TOOL_ARGUMENTS or segment.tool_call_index is None:
                continue
            call = calls[segment.tool_call_index]
            words = name_words(call.name)
            shell = bool(words & SHELL_TOOL_WORDS)
            if not (words & self.egress_words or shell or is_write(words)):
                continue
            arguments = list(string_leaves(parse_arguments(segment.text)))
            egress: dict[str, ShellEgress] = {}
            if shell:
                egress = {path: found for path, value in arguments if (found := shell_egress(value)) is not None}
            destinations = self._destinations(context, segment, egress) if words & self.egress_words or egress else []
            if destinations:
                detection = self._check(
                    context, findings, call, segment, arguments, egress, destinations, masker, index
                )
            elif is_write(words) and not shell:
                detection = self.writes.check(context, findings, call, words, segment, arguments, masker, index, finder)
            else:
                continue
            if detection is not None:
                detections.append(detection)
        return detections

    @staticmethod
    def _destinations(context: EventContext, segment: Segment, egress: dict[str, ShellEgress]) -> list[Destination]:
        """Every external destination named in the arguments: URLs, e-mail addresses and network clients' hosts."""
        found = []
        for hit in segment.hits:
            if hit.kind == "url":
                try:
                    host = (urllib.parse.urlsplit(hit.key).hostname or "").lower()
                except ValueError:
                    continue
                if host and not context.profile.domain_allowed(host):
                    found.append(Destination(hit.value, host))
            elif hit.kind == "email":
                domain = hit.key.rpartition("@")[2]
                if not context.profile.email_domain_allowed(domain):
                    found.append(Destination(hit.value, domain))
        for shell in egress.values():
            found += [Destination(h, h.lower(), True) for h in shell.hosts if not context.profile.domain_allowed(h)]
        return found

    def _check(
        self,
        context: EventContext,
        findings: Findings,
        call: ToolCall,
        segment: Segment,
        arguments: list[tuple[str, str]],
        egress: dict[str, ShellEgress],
        destinations: list[Destination],
        masker: Masker,
        index: list[ConversationIndex],
    ) -> Detection | None:
        """``arguments`` are the ``(path, string)`` leaves of the call's arguments, ``egress`` what the shell
        commands among them send out, by path, ``destinations`` the external ones it names (not empty)."""
        if not index:
            index.append(self.tracer.index(context, context.earlier))
        user_keys = context.user_keys()
        flows: dict[Flow, str] = {}  # each flow once, with the first argument it was found in
        for traced in self._traced_values(arguments, egress, {d.written for d in destinations}):
            found = [
                flow
                for flow in self.tracer.trace(traced.value, index[0], passages=traced.passages != "none")
                if (flow.what != "pii" or flow.key not in user_keys) and _counts(flow, traced.passages)
            ]
            if any(flow.transforms and flow.what != "conversation" for flow in found):
                findings.sensitive.append(SensitiveValue(kind="encoded_data", value=traced.written))
                masker = Masker([*masker.values, ("encoded_data", traced.written)])
            for flow in found:
                flows.setdefault(flow, traced.path)
        hosts = sorted({shown_host(d.host) for d in destinations})
        if flows:
            return self._exfil(context, call, segment, hosts, [(path, flow) for flow, path in flows.items()], masker)
        odd = sorted({shown_host(d.host) for d in destinations if self._odd(d)})
        if odd:
            return self._odd_detection(context, call, segment, odd, masker)
        return None

    def _odd(self, destination: Destination) -> bool:
        """A request-capture service, or a bare public IP address in a URL or address (a host a network client is
        given is often an address: ``ssh admin@203.0.113.7`` is routine; so is ``curl http://127.0.0.1:8080/health``
        on a developer's machine or a private address inside a cluster)."""
        host = destination.host
        return (host_is_ip(host) and not destination.named and not is_local_host(host)) or any(
            host == domain or host.endswith("." + domain) for domain in self.sink_domains
        )

    @staticmethod
    def _odd_detection(
        context: EventContext, call: ToolCall, segment: Segment, odd: list[str], masker: Masker
    ) -> Detection:
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

    @staticmethod
    def _traced_values(
        arguments: list[tuple[str, str]], egress: dict[str, ShellEgress], addresses: set[str]
    ) -> Iterator[Traced]:
        """Every argument value to trace; of a shell command, also its upload options and its hosts' labels."""
        for path, value in arguments:
            if value.strip() in addresses:
                continue
            if path not in egress:
                yield Traced(path, value, "none" if is_just_url(value) else "any", value)
                continue
            yield Traced(path, value, "none", value)
            for option, payload in egress[path].uploads:
                yield Traced(f"{path} {option}", payload, "any", payload)
                for name, _, field in (pair.partition("=") for pair in payload.split("&") if "=" in payload):
                    if field:  # form fields (curl -d 'k=v&k2=v2'): each value may be encoded on its own
                        yield Traced(f"{path} {option} {name[:40]}", field, "any", field)
            for host in egress[path].hosts:
                for carrier in host_label_carriers(host):
                    yield Traced(f"{path} host {carrier.where}", carrier.value, "encoded", host)

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
