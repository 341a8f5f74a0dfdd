"""``abusewatch kibana import`` pointed at something that is not Kibana (most often Elasticsearch's URL) says so
plainly, instead of a "FAILED" request and "0 objects imported, 0 failed"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from app.cli import cli
from tests.fixtures.http import JsonHandler, serving

NO_HANDLER = {"error": "no handler found for uri [/api/saved_objects/_import?overwrite=true] and method [POST]"}


class Elasticsearch(JsonHandler):
    """Answers as Elasticsearch answers a Kibana API path."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply_json(400, NO_HANDLER, {"X-elastic-product": "Elasticsearch"})


class Refusing(JsonHandler):
    """Answers as Kibana answers a request without credentials."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply_json(401, {"statusCode": 401, "error": "Unauthorized", "message": "missing credentials"})


@pytest.fixture
def elasticsearch_url() -> Iterator[str]:
    with serving(Elasticsearch) as url:
        yield url


def test_an_elasticsearch_url_is_named_as_not_kibana(elasticsearch_url: str) -> None:
    result = CliRunner().invoke(cli, ["kibana", "import", "--url", elasticsearch_url], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"kibana at {elasticsearch_url}: this URL does not look like Kibana: Elasticsearch answered" in text
    assert "give Kibana's base URL, e.g. http://localhost:5601" in text
    assert "FAILED" not in text and "objects imported" not in text


def test_a_refused_request_says_nothing_was_imported_without_counts() -> None:
    with serving(Refusing) as url:
        result = CliRunner().invoke(cli, ["kibana", "import", "--url", url], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["FAILED request: HTTP 401 missing credentials; nothing was imported"]
