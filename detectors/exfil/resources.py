"""Writes to shared resources: an agent tool that publishes into a repository, channel, space or project.

A tool call is such a write when its name says it writes (create, update, post, comment, publish, upload, write,
add, push, commit, send ...; not when it also says it reads: ``list_comments``) and its arguments name a resource: an
owner and repository, a channel, a space, a project, a bucket, a folder (:data:`RESOURCE_KEYS`). Its destination is
that resource, not a URL or an e-mail address, so the egress check (tools.py) never sees it; a write that also names
an external URL or address and is an egress tool by name stays the egress check's.

Agents write to repositories and channels all day, so what goes in must be data from the conversation that crosses
a boundary: a secret or canary seen in the input, or a verbatim passage (:data:`MIN_PASSAGE` characters of words in
a row) of a tool result or retrieved document that came from *another* resource than the destination. A tool
result came from the resource its call named (``get_file_contents(owner, repo)``); a retrieved document from its
source, the same resource when the source names the destination. Results of calls that named no resource (a local
file, a web page, a search) do not count, nor does anything copied from the destination itself (an agent editing
the file it read) or typed by the user; PII is the PII check's (a ticket about a customer names the customer).

Destinations the application may write anything it reads into (its private repositories, internal channels) are
listed in the registry as ``allowed_resources``, shell-style patterns over the resource key (``acme/*``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgspec

from detectors.base import Detection, Evidence, Findings, RuleInfo, SensitiveValue
from detectors.event import DOCUMENT, TOOL_ARGUMENTS, TOOL_RESULT, Event, ToolCall
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.decoding import decoded_forms
from detectors.exfil.flows import ConversationIndex, Flow, FlowTracer
from detectors.exfil.masking import Masker
from detectors.exfil.measures import words

RESOURCE_WRITE_RULE = RuleInfo(
    id="abw-exfil-tool-resource-write",
    name="Data copied into another shared resource by an agent tool",
    category="data_exfiltration",
    level="high",
    description="The model called a tool that writes to a shared resource (repository, channel, space, project) "
    "with a secret, a canary or a long verbatim passage of content read from a different resource in its arguments.",
    atlas=("AML.T0086",),
    owasp=("LLM06:2025", "LLM02:2025"),
)
WRITE_WORDS = frozenset(
    {"create", "update", "post", "comment", "publish", "upload", "write", "add", "append", "push", "commit", "edit"}
    | {"put", "insert", "send", "reply", "share", "save", "submit", "patch", "replace"}
)
READ_WORDS = frozenset({"get", "list", "read", "search", "fetch", "view", "query", "find", "describe", "download"})
# Argument names (lower case, ``_`` and ``-`` left out) that name a resource, owner first: the key is their values
# joined by "/" in this order, so ``get_file_contents(owner, repo)`` and ``create_pull_request(repo, owner)`` agree.
RESOURCE_KEYS: tuple[frozenset[str], ...] = (
    frozenset({"owner", "org", "organization", "organisation", "namespace", "workspace", "group", "team", "teamid"}),
    frozenset({"repo", "repository", "reponame", "repositoryname", "repofullname", "project", "projectid"}),
    frozenset({"projectkey", "projectslug", "projectname", "space", "spacekey", "spaceid", "channel", "channelid"}),
    frozenset({"channelname", "chatid", "room", "roomid", "bucket", "bucketname", "driveid", "folder", "folderid"}),
    frozenset({"databaseid", "board", "boardid", "listid", "site", "siteid", "baseid", "notebookid"}),
)
# tools that write a new resource of their own, named by no argument: a gist, a paste, a snippet is "another
# resource" than any the conversation read from
NEW_RESOURCE_WORDS = ("gist", "paste", "pastebin", "snippet")
_MAX_KEY_VALUE = 200  # a longer value is text, not a name
MIN_PASSAGE = 160  # characters of words, as for a readable passage in a fetched URL: longer than a quoted title


def is_write(names: set[str]) -> bool:
    """Whether a tool's name words (``create_pull_request``: create, pull, request) say it writes and not also that
    it reads."""
    return bool(names & WRITE_WORDS) and not names & READ_WORDS


def destination(names: set[str], leaves: Iterable[tuple[str, str]]) -> str | None:
    """The resource a write goes to: the one its arguments name, else the new gist / paste / snippet its name words
    say it makes (its key is that word), else None (no write to a shared resource)."""
    return resource_key(leaves) or next((word for word in NEW_RESOURCE_WORDS if word in names), None)


def resource_key(leaves: Iterable[tuple[str, str]]) -> str | None:
    """The resource that ``(json path, string)`` argument leaves name (``acme/app``, ``c0123``), or None.

    Only names at the top level or one level down count (``owner``, ``params.owner``): deeper ones belong to the
    content written (a file's front matter, a message's blocks)."""
    found: list[tuple[int, str, str]] = []
    for path, value in leaves:
        if path.count(".") > 1 or "[" in path or not value.strip() or len(value) > _MAX_KEY_VALUE or "\n" in value:
            continue
        name = path.rpartition(".")[2].lower().replace("_", "").replace("-", "")
        rank = next((rank for rank, names in enumerate(RESOURCE_KEYS) if name in names), None)
        if rank is not None:
            found.append((rank, name, value.strip().lstrip("#").lower()))
    return "/".join(value for _, _, value in sorted(found)) or None


@dataclass(frozen=True, slots=True)
class Source:
    """Input text read from a resource: a tool result and the resource its call named, or a retrieved document
    and its source (``resource`` None: its source names none)."""

    field: str
    text: str
    resource: str | None
    document: bool = False

    def other_than(self, destination: str) -> bool:
        """Whether this came from another resource than ``destination``: a tool result whose call named another
        resource, or a document whose source does not name the destination."""
        if self.document:
            return self.resource is None or destination not in self.resource
        return self.resource is not None and not same_resource(self.resource, destination)


def same_resource(first: str, second: str) -> bool:
    """Whether two resource keys name one resource: the names of one are all among the other's, since tools name
    a resource more or less fully (``get_file(repo="app")`` and ``create_pull_request(owner="acme", repo="app")``)."""
    one, other = set(first.split("/")), set(second.split("/"))
    return one <= other or other <= one


def sources(event: Event, leaves: Callable[[str], list[tuple[str, str]]]) -> list[Source]:
    """The tool results of ``event`` (resent history included) with the resource of the call that produced each,
    and its retrieved documents. ``leaves`` turns a call's arguments into ``(json path, string)`` leaves."""
    found: list[Source] = []
    named: dict[str, str | None] = {}  # call id -> resource
    calls = [call for message in (*event.input_messages, *event.output_messages) for call in message.tool_calls]
    for call in calls:
        resource = resource_key(leaves(call.arguments)) if call.arguments else None
        if call.id:
            named[call.id] = resource
        if call.result:
            found.append(Source(TOOL_RESULT, call.result, resource))
    for message in event.input_messages:
        if message.role == "tool" and message.content and message.tool_call_id in named:
            found.append(Source(TOOL_RESULT, message.content, named[message.tool_call_id]))
    for document in event.retrieved_documents:
        if document.content:
            found.append(Source(DOCUMENT, document.content, (document.source or "").lower() or None, document=True))
    return found


def longest_shared_run(value: list[str], source: set[str], size: int) -> int:
    """Characters (words and the single spaces between them) of the longest run of ``value`` words whose every
    ``size``-word shingle is one of ``source``'s: a passage copied verbatim, reformatting aside."""
    ends = list(itertools.accumulate(len(word) + 1 for word in value))  # ends[i]: chars of value[: i + 1] + spaces
    best, start = 0, None
    for index in range(len(value) - size + 1):
        if " ".join(value[index : index + size]) not in source:
            start = None
            continue
        start = index if start is None else start
        last = index + size - 1
        best = max(best, ends[last] - (ends[start - 1] if start else 0) - 1)
    return best


class PassageFinder:
    """Verbatim passages of other resources in a write's argument values; shingles of each source built once."""

    def __init__(self, found: list[Source], size: int) -> None:
        self.sources = found
        self.size = size
        self._shingles: dict[int, set[str]] = {}

    def find(self, value: str, destination: str) -> Source | None:
        """The source of another resource than ``destination`` that ``value`` (or a decoding of it: a file's content
        is base64 in some APIs) copies a passage of, or None."""
        for text, _transforms in decoded_forms(value) if len(value) >= MIN_PASSAGE else ():
            if len(text) >= MIN_PASSAGE and (source := self._source(words(text), destination)) is not None:
                return source
        return None

    def _source(self, tokens: list[str], destination: str) -> Source | None:
        for position, source in enumerate(self.sources):
            if not source.other_than(destination):
                continue
            shingles = self._shingles.get(position)
            if shingles is None:
                shingles = self._shingles[position] = _shingle_set(words(source.text), self.size)
            if longest_shared_run(tokens, shingles, self.size) >= MIN_PASSAGE:
                return source
        return None


def _shingle_set(tokens: list[str], size: int) -> set[str]:
    return {" ".join(tokens[index : index + size]) for index in range(len(tokens) - size + 1)}


def counts(flow: Flow) -> bool:
    """A secret counts when the input held it (a value the model made up is the secret check's alone); a canary
    always; PII and the tracer's own passages never (passages are judged by resource, :class:`PassageFinder`)."""
    return flow.what == "canary" or (flow.what == "secret" and flow.source_field is not None)


def write_detection(
    event: Event,
    call: ToolCall,
    destination: str,
    flows: list[tuple[str, Flow]],
    passages: list[tuple[str, Source]],
    snippet: str,
) -> Detection:
    """The alert: critical with a secret or canary, high with passages only."""
    whats = {flow.what for _, flow in flows} | ({"passage"} if passages else set())
    level = "critical" if whats & {"secret", "canary"} else "high"
    evidence = [Evidence(field=TOOL_ARGUMENTS, snippet=snippet, detail=f"tool {call.name} writes to {destination}")]
    for path, flow in flows:
        transforms = f" ({'+'.join(flow.transforms)})" if flow.transforms else ""
        detail = f"{flow.what} ({flow.kind}) {flow.origin()}; written by tool {call.name} argument {path}{transforms}"
        evidence.append(Evidence(field=flow.source_field or TOOL_ARGUMENTS, snippet=f"[{flow.kind}]", detail=detail))
    for path, source in passages:
        origin = f"result of a call on {source.resource}"
        if source.document:
            origin = f"retrieved document from {source.resource or 'a source not named'}"
        detail = f"passage of {MIN_PASSAGE}+ characters of a {origin}; written by tool {call.name} argument {path}"
        evidence.append(Evidence(field=source.field, snippet="[passage]", detail=detail[:1000]))
    return Detection(
        rule=msgspec.structs.replace(RESOURCE_WRITE_RULE, level=level),
        event_ids=[event.id],
        timestamp=event.timestamp,
        identity=event.identity,
        message=f"tool {call.name} writes {', '.join(sorted(whats))} to {destination}",
        score=1.0 if level == "critical" else 0.85,
        evidence=evidence,
    )


class ResourceWriteCheck:
    """Raises :data:`RESOURCE_WRITE_RULE` for a write to a shared resource that carries data across resources.
    ``leaves`` turns a call's arguments into ``(json path, string)`` leaves (the tool check's parsing)."""

    def __init__(self, tracer: FlowTracer, leaves: Callable[[str], list[tuple[str, str]]]) -> None:
        self.tracer = tracer
        self.leaves = leaves

    def check(
        self,
        context: EventContext,
        findings: Findings,
        call: ToolCall,
        names: set[str],
        segment: Segment,
        arguments: list[tuple[str, str]],
        masker: Masker,
        index: list[ConversationIndex],
        finder: list[PassageFinder],
    ) -> Detection | None:
        """``names`` are the call's name words, ``arguments`` its ``(json path, string)`` leaves; ``index`` and
        ``finder`` are built on first need and shared by the calls of one event."""
        target = destination(names, arguments)
        if target is None or context.profile.resource_allowed(target):
            return None
        if not index:
            index.append(self.tracer.index(context, context.earlier))
        if not finder:
            finder.append(PassageFinder(sources(context.event, self.leaves), self.tracer.shingle_words))
        flows: dict[Flow, str] = {}  # each flow once, with the first argument it was found in
        passages: list[tuple[str, Source]] = []
        for path, value in arguments:
            found = [flow for flow in self.tracer.trace(value, index[0], passages=False) if counts(flow)]
            if any(flow.transforms for flow in found):  # a secret or canary encoded: mask the whole value
                findings.sensitive.append(SensitiveValue(kind="encoded_data", value=value))
                masker = Masker([*masker.values, ("encoded_data", value)])
            for flow in found:
                flows.setdefault(flow, path)
            if (source := finder[0].find(value, target)) is not None:
                passages.append((path, source))
        if not flows and not passages:
            return None
        traced = [(path, flow) for flow, path in flows.items()]
        return write_detection(context.event, call, target, traced, passages, masker.excerpt(segment.text))
