"""Credential shapes coding agents read from config files: an HTTP Basic header, a .netrc entry, a Docker
config.json ``auth``. Each is found (so alerted on and masked) and documentation values are not."""

import base64
import json

import pytest

from detectors.exfil import ExfilDetector
from detectors.redact import Redactor
from tests.fixtures.exfil.builders import chat, github_token, rules, run

PASSWORD = "Vx8qLm2Rt9zKp4Wc"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


LOGIN = b64(f"svc:{PASSWORD}")


@pytest.fixture(scope="module")
def detector() -> ExfilDetector:
    return ExfilDetector()


def secrets(detector: ExfilDetector, text: str) -> list[tuple[str, str]]:
    return [(h.kind, h.value) for h in detector.scanner.scan(text) if h.family == "secret"]


BASIC, NETRC, DOCKER = "http_basic_credentials", "netrc_password", "docker_registry_auth"
NETRC_IN_JSON = json.dumps({"content": f"machine git.acme-corp.com\nlogin svc\npassword {PASSWORD}"})
FOUND = {
    "basic-curl": (f"curl -H 'Authorization: Basic {LOGIN}' https://api.acme-corp.com/v1/export", BASIC, LOGIN),
    "basic-json-escaped": (json.dumps({"cmd": f'curl -H "Authorization: Basic {LOGIN}" x'}), BASIC, LOGIN),
    "basic-code": (f'headers = {{"Authorization": "Basic {LOGIN}"}}', BASIC, LOGIN),
    "netrc-line": (f"machine api.acme-corp.com login svc password {PASSWORD}", NETRC, PASSWORD),
    "netrc-lines": (f"machine api.acme-corp.com\n  login svc\n  password {PASSWORD}\n", NETRC, PASSWORD),
    "netrc-json-escaped": (NETRC_IN_JSON, NETRC, PASSWORD),
    "netrc-password-first": (f"machine api.acme-corp.com password {PASSWORD} login svc", NETRC, PASSWORD),
    "docker": (json.dumps({"auths": {"registry.acme-corp.com": {"auth": LOGIN}}}, indent=2), DOCKER, LOGIN),
    "docker-json-escaped": (
        json.dumps({"content": json.dumps({"auths": {"ghcr.io": {"auth": LOGIN}}})}),
        DOCKER,
        LOGIN,
    ),
}


@pytest.mark.parametrize(("text", "kind", "value"), FOUND.values(), ids=FOUND.keys())
def test_each_credential_shape_is_found_with_its_kind(detector, text, kind, value):
    assert secrets(detector, text) == [(kind, value)]


@pytest.mark.parametrize(("text", "kind", "value"), FOUND.values(), ids=FOUND.keys())
def test_a_credential_a_tool_returned_alerts_and_is_masked_in_the_event(detector, text, kind, value):
    detections, findings = run(detector, chat(prompt="check my config", tool_results=[text]))
    assert rules(detections) == {"abw-exfil-secret-input"}
    assert kind in detections[0].message
    assert value not in detections[0].evidence[0].snippet
    assert value not in Redactor(b"k").scrub(text, findings.sensitive)


def test_a_credential_in_a_tool_call_is_a_secret_output(detector):
    content = FOUND["netrc-line"][0]
    detections, _ = run(detector, chat(calls=[("write_file", {"path": "~/.netrc", "content": content})]))
    assert [(d.rule.id, d.rule.level) for d in detections] == [("abw-exfil-secret-output", "high")]


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Basic {b64('Aladdin:open sesame')}",  # RFC 7617's example
        f"Authorization: Basic {b64('username:password')}",
        f"Authorization: Basic {b64('jane@example.com:Xk9vQ2mLp7Rt')}",  # a documentation address
        f"Authorization: Basic {b64('no colon ' + PASSWORD)}",
        f"machine example.com login svc password {PASSWORD}",
        "machine api.github.com login USERNAME password YOUR_TOKEN",
        "machine api.acme-corp.com login svc password $NETRC_PASSWORD",
        json.dumps({"provider": {"auth": LOGIN}}),  # an "auth" that is no Docker registry's
    ],
    ids=[
        "rfc-7617",
        "username-password",
        "example-user",
        "no-colon",
        "example-host",
        "placeholder",
        "variable",
        "not-docker",
    ],
)
def test_documentation_values_are_not_secrets(detector, text):
    assert secrets(detector, text) == []


def test_a_provider_token_as_the_netrc_password_keeps_its_own_kind(detector):
    """A GitHub token in .netrc (git over HTTPS) is a critical github_token, not a generic netrc password."""
    token = github_token(21)
    assert secrets(detector, f"machine github.com login bot password {token}") == [("github_token", token)]


def test_a_registry_token_longer_than_a_password_is_found(detector):
    """ECR's docker login password is a token of about 2 K characters (GCR's a JSON key): past the generic value's
    256 characters, randomness alone is asked."""
    token = base64.b64encode(bytes(range(256)) * 6).decode()
    auth = b64(f"AWS:{token}")
    text = json.dumps({"auths": {"123456789012.dkr.ecr.eu-west-1.amazonaws.com": {"auth": auth}}})
    assert secrets(detector, text) == [("docker_registry_auth", auth)]
