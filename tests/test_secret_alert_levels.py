"""A secret read by the model (pasted in a prompt, returned by a tool) and a secret leaving through it (a response,
tool-call arguments) are different events for the SOC: the first is one medium alert, the second critical
(docs/exfiltration.md, "Rules"). The signature pack's secrets/ rules read only what leaves, so a pasted key does
not also raise a critical "Secret exposure"."""

from __future__ import annotations

import pytest

from app.engine import build_pipeline
from app.settings import Settings
from detectors.exfil.secrets import base62_crc32
from detectors.normalise import normalise
from detectors.pipeline import Pipeline

GITHUB_TOKEN = "ghp_R4nd0mT0k3nV4lu3AbCdEfGhIjKlMn" + base62_crc32("R4nd0mT0k3nV4lu3AbCdEfGhIjKlMn")  # a valid checksum


@pytest.fixture(scope="module")
def engine() -> Pipeline:
    return build_pipeline(Settings())


def levels(pipeline: Pipeline, prompt: str, reply: str) -> dict[str, str]:
    """Rule name -> level of the secret alerts one OpenAI record raises."""
    record = {
        "request_id": "r1",
        "timestamp": 1768478400.0,
        "user": "dev-3",
        "request": {"model": "gpt-4.1", "messages": [{"role": "user", "content": prompt}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": reply}}]},
    }
    result = pipeline.fresh().process([normalise(record)])
    return {d.rule.name: d.rule.level for d in result.detections if d.rule.category == "secret_exposure"}


def test_a_pasted_secret_is_one_medium_alert(engine: Pipeline) -> None:
    found = levels(engine, f"Why does git push fail with my token {GITHUB_TOKEN}?", "Check the token's scopes.")
    assert found == {"Secret sent to the model": "medium"}


def test_a_secret_in_the_response_is_critical(engine: Pipeline) -> None:
    found = levels(engine, "What token does the deploy job use?", f"It uses {GITHUB_TOKEN}.")
    assert found.get("Secret exposure - GitHub token") == "critical"
    assert "critical" in {level for name, level in found.items() if name != "Secret exposure - GitHub token"}
