"""``abusewatch kibana import``: load the bundled data views, saved searches, Lens charts and dashboard into Kibana.

Posts ``deploy/kibana/abusewatch.ndjson`` to the saved objects ``_import`` API (multipart, ``kbn-xsrf`` header),
overwriting earlier versions of the same objects, and reports what Kibana said about each object. An installed
package has no ``deploy/`` next to it: ``ABW_KIBANA_ASSETS`` names the file there (the image sets it).
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from app.settings import PACKAGE_ROOT

ASSETS = PACKAGE_ROOT.parent / "deploy" / "kibana" / "abusewatch.ndjson"
kibana_cli = typer.Typer(
    help="Kibana assets: data views, saved searches, Lens charts, dashboard.", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)


def register(cli: typer.Typer) -> None:
    cli.add_typer(kibana_cli, name="kibana")


@dataclass(frozen=True, slots=True)
class ImportRequest:
    """Everything needed to post one NDJSON file to a Kibana."""

    url: str
    ndjson: bytes
    filename: str
    space: str | None = None
    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    overwrite: bool = True

    def endpoint(self) -> str:
        base = self.url.rstrip("/")
        if self.space and self.space != "default":
            base += "/s/" + urllib.parse.quote(self.space, safe="")
        return f"{base}/api/saved_objects/_import?overwrite={str(self.overwrite).lower()}"

    def headers(self, boundary: str) -> dict[str, str]:
        headers = {"kbn-xsrf": "abusewatch", "Content-Type": f"multipart/form-data; boundary={boundary}"}
        if self.api_key:
            headers["Authorization"] = f"ApiKey {self.api_key}"
        elif self.username:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers


def multipart_file(field: str, filename: str, content: bytes, boundary: str) -> bytes:
    """A multipart/form-data body holding one file part."""
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/ndjson\r\n\r\n"
    ).encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode()


def post_import(request: ImportRequest, context: ssl.SSLContext | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Kibana's answer to the import; an HTTP error answer is returned too when its body is JSON."""
    boundary = uuid.uuid4().hex
    body = multipart_file("file", request.filename, request.ndjson, boundary)
    http_request = urllib.request.Request(
        request.endpoint(), data=body, headers=request.headers(boundary), method="POST"
    )
    try:
        with urllib.request.urlopen(http_request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode("utf-8", "replace")
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise RuntimeError(f"HTTP {error.code} {error.reason}: {text[:500]}") from None
        if why := not_kibana(error.headers, answer):
            raise RuntimeError(
                f"this URL does not look like Kibana: {why} (HTTP {error.code}: {text[:300]}); "
                "give Kibana's base URL, e.g. http://localhost:5601"
            ) from None
        return {"success": False, "http_status": error.code, **answer}


def not_kibana(headers: Message, answer: dict[str, Any]) -> str | None:
    """Why the JSON error answer did not come from Kibana, or None: Elasticsearch names itself in a header (its URL
    is the usual mistake), and Kibana's error answers always carry ``statusCode``. Said plainly, instead of a
    "FAILED" request that reads as if Kibana had refused the objects."""
    if headers.get("X-elastic-product") == "Elasticsearch":
        return "Elasticsearch answered"
    if "statusCode" not in answer:
        return "the answer has no statusCode, which every Kibana error has"
    return None


def summarise(answer: dict[str, Any]) -> tuple[list[str], bool]:
    """One line per imported or failed object and a count of each, or one line for a refused request; and whether
    everything succeeded."""
    lines = []
    for result in answer.get("successResults", []):
        title = result.get("meta", {}).get("title", "")
        lines.append(f"ok     {result.get('type')} {result.get('id')} {title}".rstrip())
    for error in answer.get("errors", []):
        detail = error.get("error", {})
        kind = detail.get("type", "error")
        missing = ", ".join(f"{ref.get('type')}/{ref.get('id')}" for ref in detail.get("references", []))
        reason = f"{kind}: missing {missing}" if missing else kind
        if detail.get("message"):
            reason += f" ({detail['message']})"
        lines.append(f"FAILED {error.get('type')} {error.get('id')}: {reason}")
    if "http_status" in answer:  # Kibana refused the request itself: no object was tried, so no counts
        detail = answer.get("message") or answer.get("error", "")
        lines.append(f"FAILED request: HTTP {answer['http_status']} {detail}; nothing was imported")
        return lines, False
    succeeded = bool(answer.get("success")) and not answer.get("errors")
    lines.append(f"{answer.get('successCount', 0)} objects imported, {len(answer.get('errors', []))} failed")
    return lines, succeeded


def _ssl_context(ca_certs: Path | None, insecure: bool) -> ssl.SSLContext | None:
    if not insecure and ca_certs is None:
        return None
    context = ssl.create_default_context(cafile=str(ca_certs) if ca_certs else None)
    if insecure:  # the operator asked for it explicitly
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@kibana_cli.command("import")
def import_assets(
    url: str = typer.Option(..., "--url", help="Kibana base URL, e.g. http://localhost:5601."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="ABW_KIBANA_API_KEY", help="Encoded API key."),
    username: str | None = typer.Option(None, "--user", envvar="ABW_KIBANA_USER", help="Basic auth user."),
    password: str | None = typer.Option(None, "--password", envvar="ABW_KIBANA_PASSWORD", help="Basic auth password."),
    space: str | None = typer.Option(None, "--space", help="Kibana space id (default: the default space)."),
    file: Path = typer.Option(
        ASSETS, "--file", envvar="ABW_KIBANA_ASSETS", exists=True, dir_okay=False, help="Saved objects NDJSON."
    ),
    overwrite: bool = typer.Option(True, "--overwrite/--no-overwrite", help="Replace objects with the same id."),
    ca_certs: Path | None = typer.Option(None, "--ca-certs", exists=True, dir_okay=False, help="CA bundle for TLS."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify Kibana's TLS certificate."),
) -> None:
    """Import the AbuseWatch data views, saved searches, Lens charts and dashboard; exit 1 if any object fails."""
    request = ImportRequest(
        url=url,
        ndjson=file.read_bytes(),
        filename=file.name,
        space=space,
        api_key=api_key,
        username=username,
        password=password,
        overwrite=overwrite,
    )
    try:
        answer = post_import(request, _ssl_context(ca_certs, insecure))
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        out.print(Text(f"kibana at {url}: {error}"))
        raise typer.Exit(1) from None
    lines, succeeded = summarise(answer)
    for line in lines:
        out.print(Text(line))
    if not succeeded:
        raise typer.Exit(1)
