"""``abusewatch alerts list`` rendering: whole alert ids at any terminal width (Elasticsearch replaced by canned
hits: this tests the table, not the search)."""

import pytest
from typer.testing import CliRunner

from app import triage
from app.cli import cli

ALERT_ID = "833e5cf0e9e681c44fbd89ae264da596"
IDENTITY = "user:farah.haddad@acme.example"
HIT = {
    "_id": ALERT_ID,
    "_source": {
        "@timestamp": "2026-11-23T02:00:00.000Z",
        "event": {"severity": 73},
        "rule": {"id": "r1", "name": "Instruction override - ignore previous instructions"},
        "abusewatch": {"identity_key": IDENTITY, "count": 3, "status": "open"},
        "message": "Instruction override - ignore previous instructions by " + IDENTITY,
    },
}


class NoClient:
    def close(self) -> None:
        pass


@pytest.mark.parametrize("width", [80, 120, 160])
def test_list_shows_the_whole_alert_id_and_identity(monkeypatch, width):
    monkeypatch.setattr(triage, "connect", lambda settings: NoClient())
    monkeypatch.setattr(triage, "search_alerts", lambda client, index, query, limit: [HIT])
    result = CliRunner().invoke(cli, ["alerts", "list"], env={"COLUMNS": str(width)}, terminal_width=width)
    assert result.exit_code == 0, result.output
    assert ALERT_ID in result.output  # on one line, to copy into show / ack / close
    cells = "".join(line.split("│")[5].strip() for line in result.output.splitlines() if line.count("│") > 5)
    assert IDENTITY in cells  # folded over lines, not cut
