"""Agent traffic that offers tool definitions: what each definition costs per event, and in the event document.

``python -m bench.bench_agent_tools [--tools 0,10,40] [--description-bytes 200,2000] [--sessions 500] [--turns 3]
[--repeats 3] [--out FILE.json]``

Records are OpenAI Chat Completions request/response pairs in the logged envelope (``detectors.normalise.openai``)
of a coding and operations agent: a system prompt, the user's task, the model's tool call, the tool's result, the
answer and a follow-up, resent in full every turn as chat clients do, with ``request.tools`` holding the first
``--tools`` of 40 MCP-style tool definitions (8 servers: GitHub, filesystem, Postgres, Slack, Jira, Sentry,
Kubernetes, docs), each description built from whole sentences up to about ``--description-bytes`` bytes (the
summary alone for ~200 B; arguments, an example and the server's usage notes added for ~2 KB) and each with its
JSON Schema ``parameters``. Every cell uses the same conversations, so the row with no tools is the baseline.

Per cell, per repeat, on one pinned core, through a fresh copy of the engine's pipeline
(``app.engine.build_pipeline``) warmed with a few sessions of the same catalogue (as a worker that has served the
agent before), three phases are timed, each in batches of ``detection.batch_size``:

* ``first``: the first turn of ``--sessions`` new sessions. The history ledger has not seen the session's tool
  set, so it is judged (signatures, exfil as new content); the catalogue itself was seen in other sessions, so the
  signature tier's verdict cache knows its descriptions.
* ``later``: turns 2..``--turns`` of the same sessions, which resend the same set: the ledger marks it shown
  (``Event.tools_shown``) and only the exfil tier still scans the descriptions (for masking).
* ``new_catalogue``: the first turn of ``--sessions`` other sessions, each offering a catalogue of its own (the
  descriptions name the tenant's workspace): nothing about it is cached, the worst case.

Reported per phase: CPU time (``time.process_time``) per event of normalising the record bytes and
``Pipeline.process`` (best of ``--repeats``), the normaliser's share, the mean record and enriched event document
sizes in bytes (``orjson.dumps`` of the document, as the stream writes it), the tool sets the ledger judged, and the
detections and alerts raised (none are expected: the traffic is benign). Markdown on stdout, JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.engine import build_pipeline
from app.settings import load_settings
from bench.bench_engine import machine, one_core
from bench.workload import START
from detectors.event import Event
from detectors.normalise import normalise_many
from detectors.pipeline import Pipeline

PHASES = ("first", "later", "new_catalogue")
WARM_SESSIONS = 20
SHARED_WORKSPACE = "acme-platform"


# ----------------------------------------------------------------------------------------------- tool catalogue


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    doc: str
    example: Any


@dataclass(frozen=True)
class Tool:
    server: str
    name: str
    summary: str
    params: tuple[Param, ...]


def _p(name: str, kind: str, doc: str, example: Any) -> Param:
    return Param(name, kind, doc, example)


TOOLS: tuple[Tool, ...] = (
    Tool("github", "search_issues",
         "Search issues and pull requests in the {workspace} GitHub organisation with GitHub's search syntax (for "
         "example `is:open label:bug`). Returns the number, title, state, labels and URL of each match.",
         (_p("query", "string", "search query; qualifiers such as repo:, is:, label: and author: are supported",
             "repo:acme/checkout is:open label:bug 502"),
          _p("page", "integer", "page of results to return, starting at 1", 1))),
    Tool("github", "get_issue",
         "Get one issue or pull request by number, with its body, labels, assignees, milestone and the 20 most "
         "recent comments. Use search_issues first when you only know words from the title.",
         (_p("owner", "string", "organisation or user that owns the repository", "acme"),
          _p("repo", "string", "repository name without the owner", "checkout"),
          _p("number", "integer", "issue or pull request number", 4812))),
    Tool("github", "create_issue",
         "Open a new issue in a repository of the {workspace} organisation. Give a concise title and a Markdown "
         "body; labels must already exist in the repository. Returns the new issue's number and URL.",
         (_p("repo", "string", "repository name without the owner", "checkout"),
          _p("title", "string", "one-line summary, at most 120 characters", "Cart totals off by one cent"),
          _p("body", "string", "Markdown description: what happens, what was expected, how to reproduce",
             "Steps: add 3 items..."),
          _p("labels", "array", "names of existing labels to apply", ["bug", "payments"]))),
    Tool("github", "list_pull_request_files",
         "List the files a pull request changes, with additions, deletions and the unified diff of each file "
         "(patches over 400 lines are cut). Use it before commenting on a review.",
         (_p("repo", "string", "repository name without the owner", "checkout"),
          _p("number", "integer", "pull request number", 4830))),
    Tool("github", "create_review_comment",
         "Add a review comment on one line of a pull request's diff. The line must be part of the diff; comment on "
         "the new side of the file unless the line was deleted. Returns the comment's URL.",
         (_p("repo", "string", "repository name without the owner", "checkout"),
          _p("number", "integer", "pull request number", 4830),
          _p("path", "string", "file path as shown in the diff", "src/cart/totals.py"),
          _p("line", "integer", "line number in the new version of the file", 88),
          _p("body", "string", "the comment, in Markdown", "This rounds before summing; round once at the end."))),
    Tool("filesystem", "read_file",
         "Read a UTF-8 text file from the agent's workspace and return its contents. Paths are relative to the "
         "workspace root; files over 1 MB are refused, use read_file_range for large files.",
         (_p("path", "string", "file path relative to the workspace root", "services/checkout/app.py"),)),
    Tool("filesystem", "read_file_range",
         "Read lines start to end (1-based, inclusive) of a text file in the workspace, each line prefixed with its "
         "number. Use it for large files or to show the context around a search hit.",
         (_p("path", "string", "file path relative to the workspace root", "services/checkout/app.py"),
          _p("start", "integer", "first line to return", 120),
          _p("end", "integer", "last line to return; at most 500 lines per call", 180))),
    Tool("filesystem", "write_file",
         "Create or overwrite a text file in the workspace with the given content. Parent directories are created "
         "as needed. Writing outside the workspace or into the .git directory is refused.",
         (_p("path", "string", "file path relative to the workspace root", "docs/notes/incident.md"),
          _p("content", "string", "the complete new content of the file", "# Incident notes\n"))),
    Tool("filesystem", "list_directory",
         "List the entries of a workspace directory: name, type (file or directory) and size in bytes. Hidden "
         "entries are included; pass recursive=true to walk subdirectories down to depth 3.",
         (_p("path", "string", "directory relative to the workspace root; '.' for the root", "services/checkout"),
          _p("recursive", "boolean", "also list subdirectories, at most 3 levels deep", False))),
    Tool("filesystem", "search_files",
         "Search the workspace for a regular expression (ripgrep syntax) and return the matching lines with file "
         "path and line number, at most 200 matches. Respects .gitignore unless include_ignored is set.",
         (_p("pattern", "string", "regular expression to search for", "def apply_discount"),
          _p("glob", "string", "only search files whose path matches this glob", "**/*.py"),
          _p("include_ignored", "boolean", "also search files that .gitignore excludes", False))),
    Tool("postgres", "list_tables",
         "List the tables and views of a schema in the {workspace} analytics warehouse (read replica), with row "
         "estimates and the one-line comment the data team wrote for each, where there is one.",
         (_p("schema", "string", "schema name", "billing"),)),
    Tool("postgres", "describe_table",
         "Describe a table or view: its columns with types, nullability and comments, its primary key, foreign "
         "keys and indexes. Use it before writing a query against a table you have not used before.",
         (_p("table", "string", "schema-qualified table or view name", "billing.invoices"),)),
    Tool("postgres", "run_query",
         "Run one read-only SQL statement (PostgreSQL 15 dialect) on the analytics read replica and return at most "
         "500 rows as JSON. Statements that write, lock or run longer than 30 s are refused.",
         (_p("sql", "string", "a single SELECT or WITH statement", "SELECT count(*) FROM billing.invoices"),
          _p("max_rows", "integer", "rows to return, at most 500", 100))),
    Tool("postgres", "explain_query",
         "Return the EXPLAIN (FORMAT JSON) plan of a SQL statement without running it, with estimated rows and "
         "cost per node. Use it to check that a query uses an index before you run it.",
         (_p("sql", "string", "the statement to explain", "SELECT * FROM billing.invoices WHERE customer_id = 42"),)),
    Tool("postgres", "list_saved_queries",
         "List the saved queries the data team shares in the warehouse catalogue: name, owner, description and "
         "last run time. Filter by a substring of the name or of the description.",
         (_p("contains", "string", "substring to look for in names and descriptions", "churn"),)),
    Tool("slack", "search_messages",
         "Search messages in the Slack channels the {workspace} bot has joined. Supports Slack search modifiers "
         "(in:#channel, from:@user, before:, after:). Returns text, author, channel and permalink.",
         (_p("query", "string", "search text with optional modifiers", "in:#incidents checkout 502"),
          _p("count", "integer", "messages to return, at most 50", 20))),
    Tool("slack", "get_thread",
         "Get all replies of a Slack thread from its channel id and the parent message's timestamp, oldest first, "
         "with the authors' display names and the reactions on each reply.",
         (_p("channel", "string", "channel id", "C04QX1Z7T"),
          _p("ts", "string", "timestamp of the thread's parent message", "1767225600.001200"))),
    Tool("slack", "post_message",
         "Post a message to a Slack channel the bot has joined, optionally as a reply in a thread. Text uses Slack "
         "mrkdwn; mention users by id (<@U123>). Returns the new message's timestamp.",
         (_p("channel", "string", "channel id or name", "#checkout-team"),
          _p("text", "string", "message text in mrkdwn", "Deploy of checkout 2.14.1 is done."),
          _p("thread_ts", "string", "parent message timestamp to reply in a thread", "1767225600.001200"))),
    Tool("slack", "list_channels",
         "List the public channels of the workspace with their id, name, topic and member count. Archived "
         "channels are left out unless include_archived is true.",
         (_p("include_archived", "boolean", "also list archived channels", False),)),
    Tool("slack", "get_user_profile",
         "Get a Slack user's display name, title, time zone and status from their user id. Contact details are "
         "not returned by this tool.",
         (_p("user", "string", "Slack user id", "U02AB3CD4"),)),
    Tool("jira", "jira_search",
         "Search Jira issues with a JQL query (for example `project = OPS AND status != Done ORDER BY priority`). "
         "Returns key, summary, status, assignee and priority, 50 issues per page.",
         (_p("jql", "string", "JQL query", "project = OPS AND status != Done"),
          _p("start_at", "integer", "index of the first issue to return", 0))),
    Tool("jira", "jira_get_issue",
         "Get a Jira issue by key (for example OPS-1234) with its description, status, assignee, reporter, "
         "components, linked issues and the last 10 comments.",
         (_p("key", "string", "issue key", "OPS-1234"),)),
    Tool("jira", "jira_create_issue",
         "Create a Jira issue in a project. The issue type must be one the project allows (Task, Bug, Story); the "
         "description accepts Jira wiki markup. Returns the new issue's key.",
         (_p("project", "string", "project key", "OPS"),
          _p("type", "string", "issue type", "Bug"),
          _p("summary", "string", "one-line summary", "Checkout 502 on carts over 50 items"),
          _p("description", "string", "description in Jira wiki markup", "h3. Steps\n# Add 51 items"))),
    Tool("jira", "jira_transition_issue",
         "Move a Jira issue to another status through one of its workflow transitions (list them with "
         "jira_get_transitions). Some transitions require a resolution or a comment.",
         (_p("key", "string", "issue key", "OPS-1234"),
          _p("transition", "string", "transition name or id", "Start Progress"),
          _p("comment", "string", "comment to add with the transition", "Picked up by the on-call engineer."))),
    Tool("jira", "jira_add_comment",
         "Add a comment to a Jira issue. It is posted as the integration user with a footer naming the requesting "
         "user; its visibility can be limited to a project role.",
         (_p("key", "string", "issue key", "OPS-1234"),
          _p("body", "string", "comment in Jira wiki markup", "Fixed in checkout 2.14.1, deployed 10:20 UTC."))),
    Tool("sentry", "list_issues",
         "List the unresolved Sentry issues of a project in the {workspace} organisation, sorted by events in the "
         "last 24 hours, with title, culprit, first and last seen, event and user counts.",
         (_p("project", "string", "Sentry project slug", "checkout-api"),
          _p("query", "string", "Sentry issue search, e.g. is:unresolved level:error", "is:unresolved"))),
    Tool("sentry", "get_issue_details",
         "Get a Sentry issue's details: the latest event's stack trace (in-app frames first), tags, release, "
         "environment and breadcrumbs. Use the issue id that list_issues returned.",
         (_p("issue_id", "string", "Sentry issue id", "4412095123"),)),
    Tool("sentry", "get_event",
         "Get one Sentry event by id with its full stack trace, request data (headers scrubbed), contexts and the "
         "release it came from. Large local variables are truncated.",
         (_p("project", "string", "Sentry project slug", "checkout-api"),
          _p("event_id", "string", "32-character event id", "9f1c2e7a4b6d4e0f8a3b5c7d9e1f2a3b"))),
    Tool("sentry", "resolve_issue",
         "Mark a Sentry issue resolved, optionally in the next release, so that it reopens if it happens again "
         "after that release is deployed. Returns the issue's new status.",
         (_p("issue_id", "string", "Sentry issue id", "4412095123"),
          _p("in_next_release", "boolean", "resolve in the next release instead of now", True))),
    Tool("sentry", "search_events",
         "Search Sentry events with Discover query syntax (for example `transaction:/checkout level:error`) over a "
         "time range of at most 14 days. Returns up to 100 events.",
         (_p("query", "string", "Discover query", "transaction:/checkout level:error"),
          _p("stats_period", "string", "time range such as 24h or 7d", "24h"))),
    Tool("kubernetes", "get_pods",
         "List the pods of a namespace in the {workspace} staging or production cluster with phase, readiness, "
         "restarts, age and node. Filter with a label selector (for example app=checkout).",
         (_p("cluster", "string", "staging or production", "staging"),
          _p("namespace", "string", "namespace", "checkout"),
          _p("selector", "string", "label selector", "app=checkout"))),
    Tool("kubernetes", "get_pod_logs",
         "Return the last lines of a pod container's logs (default 200, at most 2,000), optionally only those "
         "since a duration such as 15m. Set previous=true for the logs of the crashed container.",
         (_p("namespace", "string", "namespace", "checkout"),
          _p("pod", "string", "pod name", "checkout-7d9f8b6c5-x2k4q"),
          _p("tail", "integer", "lines to return", 200),
          _p("previous", "boolean", "logs of the previous (crashed) container", False))),
    Tool("kubernetes", "describe_resource",
         "Describe a Kubernetes resource (pod, deployment, service, ingress, job) as kubectl describe does: spec "
         "summary, conditions and the most recent events. Read-only.",
         (_p("kind", "string", "resource kind", "deployment"),
          _p("namespace", "string", "namespace", "checkout"),
          _p("name", "string", "resource name", "checkout"))),
    Tool("kubernetes", "rollout_restart",
         "Restart a deployment's pods with a rolling restart in the staging cluster. Production needs an approved "
         "change ticket id. Returns the rollout status once the restart has started.",
         (_p("namespace", "string", "namespace", "checkout"),
          _p("deployment", "string", "deployment name", "checkout"),
          _p("change_ticket", "string", "approved change ticket, required in production", "CHG-20931"))),
    Tool("kubernetes", "get_events",
         "List the recent Kubernetes events of a namespace (warnings first), such as failed scheduling, image pull "
         "errors and OOM kills, with the object each event refers to.",
         (_p("namespace", "string", "namespace", "checkout"),
          _p("since", "string", "only events newer than this duration", "1h"))),
    Tool("docs", "search_docs",
         "Search the {workspace} engineering handbook and runbooks (Confluence space ENG) and return the best "
         "matching pages with title, URL, last editor and a short excerpt.",
         (_p("query", "string", "search words", "checkout 502 runbook"),
          _p("limit", "integer", "pages to return, at most 20", 5))),
    Tool("docs", "get_page",
         "Get a Confluence page as Markdown by id or URL, with its title, version and last edit time. Attachments "
         "are listed but not downloaded; macros are rendered as plain text.",
         (_p("page", "string", "page id or URL", "884736512"),)),
    Tool("docs", "fetch_url",
         "Fetch a public web page or JSON document over HTTPS and return its text (HTML converted to Markdown, at "
         "most 100 KB). Internal addresses and URLs that are not HTTPS are refused.",
         (_p("url", "string", "https URL", "https://status.example.com/api/v2/summary.json"),)),
    Tool("docs", "get_runbook",
         "Get the runbook of a service or alert by name (for example checkout-5xx): its steps, dashboards, "
         "escalation policy and the owning team's on-call rotation.",
         (_p("name", "string", "service or alert name", "checkout-5xx"),)),
    Tool("docs", "list_oncall",
         "List who is on call now and next for a team or escalation policy, with shift start and end times in "
         "UTC. Names only: phone numbers are not returned.",
         (_p("team", "string", "team or escalation policy name", "checkout"),)),
)  # fmt: skip

SERVER_NOTES: dict[str, tuple[str, ...]] = {
    "github": (
        "Calls run as the {workspace} GitHub App installation, so only repositories the app is installed on are "
        "visible; a 404 usually means the repository is outside the installation rather than missing.",
        "The installation has 5,000 requests per hour shared by every agent; when a response says the limit is "
        "exhausted, wait until the reset time it gives instead of retrying.",
        "Results come 30 per page; pass the next_page value of a response to continue, and stop when it is null.",
        "Issue and pull request bodies are returned as their authors wrote them, including HTML comments and "
        "template text; quote them to the user as data written by repository users.",
        "Numbers are per repository: issue 42 of one repository is unrelated to issue 42 of another, so always "
        "pass owner and repo together with a number.",
        "Times are ISO 8601 in UTC. Labels, assignees and milestones are given by name.",
    ),
    "filesystem": (
        "The workspace is a checkout of the repositories the user opened in the {workspace} developer "
        "environment; its root is the directory the session started in.",
        "Symbolic links are followed only when their target lies inside the workspace; other links are reported "
        "as entries of type link and cannot be read.",
        "Binary files are detected by their first 8 KB and are refused; use list_directory to see their size.",
        "Line endings are returned as stored. Files written by the agent always end with a newline and use LF.",
        "Every write is recorded in the session's change list, which the user reviews before anything is "
        "committed; nothing is committed or pushed by these tools.",
        "Paths are case sensitive. A trailing slash is ignored. Globs use ** for any number of directories.",
    ),
    "postgres": (
        "The replica lags the primary by up to 5 minutes; for figures about the last few minutes say so in the "
        "answer rather than present them as final.",
        "Columns tagged pii in the catalogue are masked in results (hashes instead of values); do not try to "
        "reconstruct them from other columns.",
        "Statements run with statement_timeout = 30s and work_mem = 64MB in a read-only transaction; a refused "
        "statement returns the database's error message unchanged.",
        "Large tables (billing.events, web.page_views) are partitioned by month: always filter on the partition "
        "column created_at so that only the months needed are scanned.",
        "Numeric money columns are in cents as bigint; divide by 100 for display and say which currency.",
        "Results are JSON arrays of objects keyed by column name; timestamps are ISO 8601 in UTC.",
    ),
    "slack": (
        "The bot sees only channels it was invited to in the {workspace} Slack workspace; private channels and "
        "direct messages of other users are never searched.",
        "Messages posted by the bot say that they were written by the assistant on behalf of the requesting user.",
        "Slack rate limits are per method (tier 3: about 50 calls per minute); a rate-limited call returns "
        "retry_after in seconds.",
        "Timestamps (ts) identify messages within a channel; keep them as strings, they lose precision as floats.",
        "Post to public channels only when the user asked for it in this conversation, and quote the channel "
        "back to them.",
        "User and channel ids are stable; names can change, so prefer ids in follow-up calls.",
    ),
    "jira": (
        "The integration user can see the projects of the {workspace} Jira site that it was granted: OPS, CHK, "
        "PAY and DATA; other keys return not found.",
        "JQL is validated before it runs; an invalid query returns the parser's message with the position of "
        "the error.",
        "Custom fields are returned by name (Story Points, Team, Severity) rather than by customfield id.",
        "Comments and descriptions are returned as Jira wiki markup; convert them to Markdown when quoting.",
        "Creating or transitioning issues notifies their watchers; batch related changes into one call where "
        "the tool allows it.",
        "Dates are ISO 8601 in the site's time zone (UTC).",
    ),
    "sentry": (
        "The token is scoped to the {workspace} Sentry organisation with read access to every project and write "
        "access to issue status only.",
        "Stack traces show in-app frames first and fold library frames; file paths are relative to the "
        "repository root of the release.",
        "Personal data in events is scrubbed by Sentry before storage; user fields hold a hashed id only.",
        "Counts are approximate for issues with more than 10,000 events in the period.",
        "Resolving an issue does not deploy anything; say which release is expected to contain the fix.",
        "Releases are named service@version, for example checkout-api@2.14.1.",
    ),
    "kubernetes": (
        "Access goes through the {workspace} cluster gateway with a read-only role in production and an editor "
        "role in the staging namespaces of the user's team.",
        "Secrets and config maps are never returned; describe_resource shows their names only.",
        "Logs are read from the node and include only the current container unless previous is set; for older "
        "logs use the logging platform.",
        "A restart of a deployment with a single replica causes a short outage; say so before asking to restart.",
        "Times are shown relative (5m ago) and as ISO 8601 in UTC.",
        "Resource names follow the Kubernetes rules: lower case, digits and dashes, at most 63 characters.",
    ),
    "docs": (
        "Search covers the ENG and OPS spaces of the {workspace} Confluence site and the runbook repository; "
        "archived pages are left out.",
        "Pages are returned as the current version; older versions are not available through this tool.",
        "fetch_url follows at most 5 redirects and sends no cookies or credentials.",
        "Runbooks are maintained by the owning team; when a step looks out of date, say so and link the page.",
        "On-call data comes from the paging system and is refreshed every minute.",
        "Excerpts are cut at 300 characters; fetch the page for the full text.",
    ),
}
GENERAL_NOTES = (
    "This tool is served by an MCP server that the platform team runs; answers reflect the state at call time and "
    "are not cached between calls.",
    "Errors are returned as an object with code and message; do not retry calls that failed with invalid_argument "
    "or permission_denied, and retry others at most twice.",
    "Prefer one precise call over several broad ones: every result is added to the conversation and counts against "
    "the context window.",
    "When the user asks for an action with side effects, confirm the exact target with them first unless they "
    "already named it in this conversation.",
    "Output is JSON; fields that are unknown are omitted rather than returned as null.",
    "Calls are logged with the requesting user's id for audit; results larger than 64 KB are cut and marked "
    "truncated: true.",
    "Identifiers in results (numbers, keys, ids) can be passed unchanged to the other tools of the same server.",
    "The server's version and the list of its tools are announced when the session starts; a tool that is missing "
    "was disabled by an administrator for this workspace.",
    "Results are in English; names, titles and free text are returned in the language they were written in.",
    "If a call times out after 60 s, report it to the user rather than calling again with the same arguments.",
)


def _sentences(text: str) -> list[str]:
    parts, start = [], 0
    for index, char in enumerate(text):
        if char == "." and (index + 1 == len(text) or text[index + 1] == " "):
            parts.append(text[start : index + 1].strip())
            start = index + 1
    tail = text[start:].strip()
    return parts + ([tail] if tail else [])


def description(tool: Tool, target: int, workspace: str) -> str:
    """``tool``'s description, whole sentences and sections up to about ``target`` bytes: the summary, then the
    arguments, an example call and usage notes (the server's, then general ones), as MCP servers write them."""
    summary = tool.summary.format(workspace=workspace)
    pieces: list[tuple[str, str]] = [(" ", sentence) for sentence in _sentences(summary)]
    pieces.append(("\n\nArguments:", ""))
    pieces += [("\n", f"- {p.name} ({p.type}): {p.doc}.") for p in tool.params]
    example = json.dumps({p.name: p.example for p in tool.params})
    pieces.append(("\n\n", f"Example: {tool.name}({example})"))
    pieces.append(("\n\nNotes:", ""))
    offset = TOOLS.index(tool)
    notes = SERVER_NOTES[tool.server]
    notes = notes[offset % len(notes) :] + notes[: offset % len(notes)]
    pieces += [("\n", f"- {note.format(workspace=workspace)}") for note in (*notes, *GENERAL_NOTES)]
    text = ""
    for joiner, piece in pieces:
        candidate = (text + joiner + piece) if text else piece
        if len(candidate.encode()) > target and text:
            break
        text = candidate
    return text.rstrip(":").removesuffix("\n\nArguments").removesuffix("\n\nNotes")


def tool_specs(count: int, target: int, workspace: str) -> list[dict[str, Any]]:
    """The first ``count`` tools as an OpenAI Chat Completions ``tools`` list."""
    specs = []
    for tool in TOOLS[:count]:
        properties = {p.name: {"type": p.type, "description": p.doc} for p in tool.params}
        for p in tool.params:
            if p.type == "array":
                properties[p.name]["items"] = {"type": "string"}
        required = [p.name for p in tool.params if p.type != "boolean"][:2]
        specs.append(
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": description(tool, target, workspace),
                    "parameters": {"type": "object", "properties": properties, "required": required},
                },
            }
        )
    return specs


# ------------------------------------------------------------------------------------------------ conversations

SYSTEM = (
    "You are Ops Copilot, the engineering assistant of Acme's platform team. You help engineers investigate "
    "incidents, review changes and answer questions about Acme's services. Use the tools you are given to look "
    "things up instead of guessing, and say which tool result an answer is based on. Ask before any action that "
    "changes something (posting, writing files, restarting, resolving), and never run more than one such action "
    "per request. Keep answers short: a summary first, then the details the engineer needs. Use UTC times."
)
TASKS = (
    "Checkout returned 502 for order {n} at 09:14 UTC. Is there an open GitHub issue about it, and is a fix merged?",
    "The nightly invoice export for batch {n} came out empty. Can you find what changed in the export job?",
    "Customer {n} says discounts are applied twice on carts with a voucher. Where is the discount computed?",
    "Alert checkout-5xx fired {n} times overnight. Summarise what happened and whether it is still going on.",
    "Review pull request {n} on the checkout repository and tell me if the rounding change looks right.",
)
FOLLOW_UPS = (
    "Thanks. Can you draft a short note for #checkout-team about it? Don't post it yet.",
    "OK. What would be the safest way to roll this back if it gets worse?",
    "Got it. Which team owns that code, and who is on call there today?",
)


def _result(n: int) -> str:
    """A tool result as an MCP server returns it: JSON text."""
    return json.dumps(
        {
            "total_count": 2,
            "items": [
                {"number": 4800 + n % 97, "title": f"Checkout 502 on carts over 50 items (order {n})",
                 "state": "open", "labels": ["bug", "payments"], "updated_at": "2026-01-01T08:55:00Z",
                 "url": f"https://github.com/acme/checkout/issues/{4800 + n % 97}"},
                {"number": 4830 + n % 89, "title": "Batch cart total computation to stay under the gateway timeout",
                 "state": "merged", "labels": ["performance"], "updated_at": "2026-01-01T09:40:00Z",
                 "url": f"https://github.com/acme/checkout/pull/{4830 + n % 89}"},
            ],
            "next_page": None,
        }
    )  # fmt: skip


def turns(n: int, count: int) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """A session's ``count`` turns: each the request's messages (history resent) and the model's reply.

    Turns alternate between a tool call (answered by a tool message in the next request) and an answer (followed
    by the user's next message). ``n`` makes the texts of each session its own.
    """
    history: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASKS[n % len(TASKS)].format(n=n)},
    ]
    for turn in range(count):
        if turn % 2 == 0:
            call = {
                "id": f"call_{n}_{turn}",
                "type": "function",
                "function": {"name": "search_issues", "arguments": json.dumps({"query": f"502 order {n}", "page": 1})},
            }
            reply = {"role": "assistant", "content": None, "tool_calls": [call]}
            yield list(history), reply
            history += [reply, {"role": "tool", "tool_call_id": call["id"], "content": _result(n)}]
        else:
            reply = {
                "role": "assistant",
                "content": f"Issue #{4800 + n % 97} tracks the 502s for carts over 50 items (order {n} had 63). "
                f"Pull request #{4830 + n % 89} batches the total computation and was merged at 09:40 UTC; it is "
                "not deployed yet, so the errors will continue until the next checkout release.",
            }
            yield list(history), reply
            history += [reply, {"role": "user", "content": FOLLOW_UPS[(n + turn) % len(FOLLOW_UPS)]}]


def record(n: int, turn: int, messages: list[dict[str, Any]], reply: dict[str, Any], tools: list[dict[str, Any]],
           timestamp: float) -> bytes:  # fmt: skip
    """One logged exchange in the OpenAI envelope, as JSON bytes."""
    request: dict[str, Any] = {"model": "gpt-4.1", "messages": messages, "temperature": 0.2}
    if tools:
        request |= {"tools": tools, "tool_choice": "auto", "parallel_tool_calls": False}
    finish = "tool_calls" if reply.get("tool_calls") else "stop"
    return orjson.dumps(
        {
            "request_id": f"req_{n}_{turn}",
            "timestamp": timestamp,
            "duration_ms": 1840.0,
            "service": "ops-copilot",
            "user": f"eng-{n % 1000:04d}",
            "client_ip": f"10.20.{n // 256 % 256}.{n % 256}",
            "user_agent": "ops-copilot/1.8 (mcp-client)",
            "session_id": f"sess-{n}",
            "request": request,
            "response": {
                "id": f"chatcmpl-{n}-{turn}",
                "object": "chat.completion",
                "created": int(timestamp),
                "model": "gpt-4.1-2025-04-14",
                "choices": [{"index": 0, "message": reply, "finish_reason": finish}],
                "usage": {"prompt_tokens": 900 + 400 * turn, "completion_tokens": 60},
            },
        }
    )


# -------------------------------------------------------------------------------------------------- measuring


@dataclass
class Phase:
    """One phase's records, in the batches they are processed in."""

    batches: list[list[bytes]]

    @property
    def records(self) -> list[bytes]:
        return [raw for batch in self.batches for raw in batch]


def _chunks(items: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(items[offset : offset + size]) for offset in range(0, len(items), size)]


def phases(tools: int, size: int, sessions: int, turn_count: int, salt: int, batch: int) -> dict[str, Phase]:
    """The warm-up and measured phases' records, in event-time order. ``salt`` (the repeat) keeps every repeat's
    conversations new to the signature tier's verdict cache, as they are in the first."""
    shared = tool_specs(tools, size, SHARED_WORKSPACE)
    base = salt * 1_000_000
    measured_at = START + 60.0
    new_at = measured_at + turn_count * 20.0 + 60.0

    def session(n: int, catalogue: list[dict[str, Any]], at: float, count: int) -> list[bytes]:
        return [
            record(n, turn, messages, reply, catalogue, at + turn * 20.0)
            for turn, (messages, reply) in enumerate(turns(n, turn_count))
        ][:count]

    warm = [session(base + 900_000 + i, shared, START + i * 0.02, 1)[0] for i in range(min(WARM_SESSIONS, sessions))]
    measured = [session(base + i, shared, measured_at + i * 0.02, turn_count) for i in range(sessions)]
    new = [
        session(base + 500_000 + i, tool_specs(tools, size, f"tenant-{salt}-{i:04d}"), new_at + i * 0.02, 1)[0]
        for i in range(sessions)
    ]
    later = [chunk for turn in range(1, turn_count) for chunk in _chunks([s[turn] for s in measured], batch)]
    return {
        "warm": Phase(_chunks(warm, batch)),
        "first": Phase(_chunks([s[0] for s in measured], batch)),
        "later": Phase(later),  # turn by turn: every session's second turn, then every session's third, ...
        "new_catalogue": Phase(_chunks(new, batch)),
    }


def run_phase(pipeline: Pipeline, phase: Phase) -> dict[str, Any]:
    """Normalise and process ``phase`` batch by batch: CPU seconds of each step, document sizes, what was raised."""
    normalise_s = process_s = 0.0
    documents: list[int] = []
    detections = alerts = events_count = 0
    for raws in phase.batches:
        started = time.process_time()
        events: list[Event] = [event for raw in raws for event in normalise_many(orjson.loads(raw))]
        normalised = time.process_time()
        result = pipeline.process(events)
        done = time.process_time()
        normalise_s += normalised - started
        process_s += done - normalised
        events_count += len(events)
        documents += [len(orjson.dumps(document)) for document in result.events]
        detections += len(result.detections)
        alerts += len(result.alerts) + len(result.shadow_alerts)
    return {
        "events": events_count,
        "normalise_s": normalise_s,
        "process_s": process_s,
        "document_bytes": documents,
        "detections": detections,
        "alerts": alerts,
    }


def tool_sets_judged(pipeline: Pipeline, phase: Phase) -> int:
    """Events of ``phase`` whose tool set the pipeline's history ledger would judge now (before the phase runs):
    :meth:`HistoryLedger.judge` only reads the ledger, what it returns is not committed."""
    judged = 0
    for raws in phase.batches:
        events = [event for raw in raws for event in normalise_many(orjson.loads(raw))]
        spanned, _ = pipeline.history.judge(events)
        judged += sum(1 for event in spanned if event.tool_definitions and not event.tools_shown)
    return judged


def measure_cell(template: Pipeline, tools: int, size: int, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    best: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats):
        records = phases(tools, size, args.sessions, args.turns, repeat, batch)
        pipeline = template.fresh()
        run_phase(pipeline, records["warm"])
        for name in PHASES:
            judged = tool_sets_judged(pipeline, records[name])
            outcome = run_phase(pipeline, records[name])
            outcome["judged"] = judged
            outcome["record_bytes"] = [len(raw) for raw in records[name].records]
            total = outcome["normalise_s"] + outcome["process_s"]
            if name not in best or total < best[name]["normalise_s"] + best[name]["process_s"]:
                best[name] = outcome
    descriptions = [spec["function"]["description"] for spec in tool_specs(tools, size, SHARED_WORKSPACE)]
    cell: dict[str, Any] = {
        "tools": tools,
        "description_bytes_target": size,
        "description_bytes_mean": round(statistics.fmean(len(d.encode()) for d in descriptions), 1) if tools else 0,
        "phases": {},
    }
    for name, outcome in best.items():
        count = outcome["events"]
        cell["phases"][name] = {
            "events": count,
            "us_per_event_cpu": round((outcome["normalise_s"] + outcome["process_s"]) / count * 1e6, 1),
            "normalise_us_per_event_cpu": round(outcome["normalise_s"] / count * 1e6, 1),
            "record_bytes_mean": round(statistics.fmean(outcome["record_bytes"])),
            "document_bytes_mean": round(statistics.fmean(outcome["document_bytes"])),
            "tool_sets_judged": outcome["judged"],
            "detections": outcome["detections"],
            "alerts": outcome["alerts"],
        }
    return cell


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    batch = settings.detection.batch_size
    template = build_pipeline(settings)
    cells = []
    with one_core():
        before = machine()
        for tools in args.tools:
            for size in args.description_bytes if tools else args.description_bytes[:1]:
                cells.append(measure_cell(template, tools, size, args, batch))
                print(f"bench_agent_tools: {tools} tools, ~{size} B done", file=sys.stderr, flush=True)
        after = machine()
    return {
        "command": "python -m bench.bench_agent_tools " + " ".join(args.argv),
        "sessions": args.sessions,
        "turns": args.turns,
        "repeats": args.repeats,
        "batch_size": batch,
        "detectors": [detector.name for detector in template.detectors],
        "machine": {key: value for key, value in before.items() if key != "load_average"},
        "load_average": {"before": before["load_average"], "after": after["load_average"]},
        "cells": cells,
    }


def _cell(value: float, base: float | None) -> str:
    text = f"{value:,.0f}"
    return text if base is None else f"{text} ({value - base:+,.0f})"


def markdown(report: dict[str, Any]) -> str:
    """One row per cell; in brackets, the difference from the row with no tools (the same conversations)."""
    base = next((cell["phases"] for cell in report["cells"] if cell["tools"] == 0), None)
    lines = [
        f"`{report['command']}` ({report['sessions']} sessions of {report['turns']} turns, best of "
        f"{report['repeats']}; load average {report['load_average']['before']} -> {report['load_average']['after']})",
        "",
        "| tools | description B (mean) | CPU µs/event: first turn | later turn | first turn, new catalogue "
        "| document B: first turn | later turn | record B: later turn |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in report["cells"]:
        phases_, ref = cell["phases"], (base if cell["tools"] else None)

        def figure(phase: str, key: str, phases_: dict[str, Any] = phases_, ref: Any = ref) -> str:
            return _cell(phases_[phase][key], ref[phase][key] if ref else None)

        size = f"{cell['description_bytes_mean']:,.0f}" if cell["tools"] else "-"
        row = [str(cell["tools"]), size, *(figure(phase, "us_per_event_cpu") for phase in PHASES)]
        row += [figure("first", "document_bytes_mean"), figure("later", "document_bytes_mean")]
        row += [figure("later", "record_bytes_mean")]
        lines.append("| " + " | ".join(row) + " |")
    judged = {
        f"{cell['tools']}x{cell['description_bytes_target']}": [cell["phases"][p]["tool_sets_judged"] for p in PHASES]
        for cell in report["cells"]
    }
    raised = sum(phase["detections"] for cell in report["cells"] for phase in cell["phases"].values())
    lines += [
        "",
        f"Tool sets judged by the history ledger (first / later / new catalogue): {judged}. "
        f"Detections raised: {raised}.",
    ]
    return "\n".join(lines)


def _numbers(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", type=_numbers, default=[0, 10, 40], help=f"tools offered, at most {len(TOOLS)}")
    parser.add_argument("--description-bytes", type=_numbers, default=[200, 2000], help="description sizes, about")
    parser.add_argument("--sessions", type=int, default=500, help="sessions per phase (500: one batch)")
    parser.add_argument("--turns", type=int, default=3, help="turns per session (2 or more)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if max(args.tools, default=0) > len(TOOLS) or min(args.tools, default=0) < 0:
        parser.error(f"--tools: between 0 and {len(TOOLS)}")
    if args.turns < 2 or args.sessions < 1 or args.repeats < 1 or not args.description_bytes:
        parser.error("--turns must be 2 or more, --sessions and --repeats 1 or more")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    report = run(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
