"""Secret detection: each format found and validated, look-alikes rejected, severities by where it appears."""

import base64
import random
import string

import pytest

from detectors.exfil import ExfilDetector
from detectors.exfil.secrets import base62_crc32, github_checksum_ok, is_placeholder
from tests.fixtures.exfil.builders import chat, github_token, rules, run

RNG = random.Random(5)


def chars(alphabet: str, count: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(count))


@pytest.fixture(scope="module")
def detector() -> ExfilDetector:
    return ExfilDetector()


VALID = {
    "aws_access_key_id": "AKIA" + "Q2W3E4R5T6Y7U2I3",
    "gcp_api_key": "AIza" + "Sy9fK2LmQ8vX1bN4cR7tW0eZ3hJ6pD5aG2k",
    "github_token": github_token(3),
    "gitlab_token": "glpat-" + "x9Fk2LmQ8vX1bN4cR7tW",
    "stripe_live_key": "sk_live_" + "51HqL9fK2LmQ8vX1bN4cR7tW0e",
    "anthropic_api_key": "sk-ant-api03-" + chars(string.ascii_letters + string.digits + "-_", 93) + "AA",
    "groq_api_key": "gsk_" + chars(string.ascii_letters + string.digits, 52),
    "openai_api_key": "sk-proj-" + chars(string.ascii_letters + string.digits, 60),
}


@pytest.mark.parametrize(("kind", "value"), sorted(VALID.items()))
def test_provider_tokens_are_found_with_their_kind(detector, kind, value):
    hits = detector.scanner.scan(f"config: {value} end")
    assert [(h.kind, h.value) for h in hits] == [(kind, value)]


def test_github_checksum_is_checked():
    token = github_token(7)
    assert github_checksum_ok(token)
    broken = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert not github_checksum_ok(broken)
    assert base62_crc32("a" * 30) != base62_crc32("b" * 30)


def test_github_token_with_wrong_checksum_is_not_a_secret(detector):
    token = github_token(8)
    assert detector.scanner.scan(token[:-1] + ("Z" if token[-1] != "Z" else "Y")) == []


@pytest.mark.parametrize(
    "text",
    [
        "AKIAIOSFODNN7EXAMPLE",
        'api_key = "YOUR_API_KEY_HERE"',
        "password = os.environ['DB_PASSWORD']",
        "token: ${GITHUB_TOKEN}",
        "DATABASE_URL=postgres://user:password@localhost/db",
        'secret = "changeme"',
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "id 123e4567-e89b-12d3-a456-426614174000 sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    ],
)
def test_placeholders_and_lookalikes_are_not_secrets(detector, text):
    assert [h for h in detector.scanner.scan(text) if h.family == "secret"] == []


def test_structured_secrets_are_validated(detector):
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"sub":"42"}').decode().rstrip("=")
    jwt = f"{header}.{payload}.{chars(string.ascii_letters, 43)}"
    key_body = base64.b64encode(RNG.randbytes(300)).decode()
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{key_body}\n-----END RSA PRIVATE KEY-----"
    azure = base64.b64encode(RNG.randbytes(64)).decode()
    text = (
        f"Authorization: Bearer {jwt}\n{pem}\nAccountName=x;AccountKey={azure};\n"
        "DATABASE_URL=mysql://svc:Zr8-q1Lm0pW@db.internal:3306/app\n"
        "aws_secret_access_key = 'Zr8q1Lm0pWx7Yb2Nc4Vd6Ef8Gh0Ij2Kl4Mn6Op8Q'"
    )
    found = {(h.kind, h.value) for h in detector.scanner.scan(text) if h.family == "secret"}
    assert found == {
        ("jwt", jwt),
        ("private_key", pem),
        ("azure_storage_key", azure),
        ("database_password", "Zr8-q1Lm0pW"),
        ("aws_secret_access_key", "Zr8q1Lm0pWx7Yb2Nc4Vd6Ef8Gh0Ij2Kl4Mn6Op8Q"),
    }


def test_generic_assignment_needs_entropy(detector):
    strong = [h.value for h in detector.scanner.scan('db_password = "q8Zr1Lm0pWx7"')]
    weak = [h.value for h in detector.scanner.scan('db_password = "aaaa1111aaaa"')]
    assert strong == ["q8Zr1Lm0pWx7"]
    assert weak == []


def test_generic_assignment_inside_json_string(detector):
    hits = detector.scanner.scan('{"content": "api_key = \\"q8Zr1Lm0pWx7Yb2Nc4Vd\\""}')
    assert [(h.kind, h.value) for h in hits] == [("generic_secret", "q8Zr1Lm0pWx7Yb2Nc4Vd")]


def test_is_placeholder():
    assert is_placeholder("<your-key>")
    assert is_placeholder("xxxxxxxxxxxx")
    assert not is_placeholder("q8Zr1Lm0pWx7")


def test_secret_in_response_is_critical_and_in_prompt_is_medium(detector):
    token = github_token(11)
    out, out_findings = run(detector, chat(prompt="show config", completion=f"GITHUB_TOKEN={token}"))
    into, into_findings = run(detector, chat(prompt=f"why does {token} fail?", completion="It expired."))
    assert [(d.rule.id, d.rule.level, d.rule.category) for d in out] == [
        ("abw-exfil-secret-output", "critical", "secret_exposure")
    ]
    assert [(d.rule.id, d.rule.level) for d in into] == [("abw-exfil-secret-input", "medium")]
    for findings in (out_findings, into_findings):
        assert findings.fields["gen_ai.security.secrets"]["types"] == ["github_token"]
        assert [s.value for s in findings.sensitive] == [token]


def test_secret_in_tool_arguments_alerts_and_evidence_is_masked(detector):
    key = VALID["groq_api_key"]
    detections, _ = run(detector, chat(calls=[("write_file", {"content": f"GROQ_API_KEY={key}"})]))
    assert rules(detections) == {"abw-exfil-secret-output"}
    assert detections[0].rule.level == "high"
    evidence = detections[0].evidence[0]
    assert evidence.field == "gen_ai.tool.call.arguments"
    assert key not in evidence.snippet and "[groq_api_key]" in evidence.snippet


def test_secret_only_in_resent_history_is_redacted_but_not_alerted(detector):
    from detectors.event import Message

    token = github_token(12)
    history = [Message(role="user", content=f"my token {token}"), Message(role="assistant", content="ok")]
    detections, findings = run(detector, chat(history=history, prompt="thanks", completion="welcome"))
    assert detections == []
    assert [s.value for s in findings.sensitive] == [token]
    assert "gen_ai.security.secrets" not in findings.fields


def test_gcp_service_account_json_key_is_found(detector):
    body = base64.b64encode(RNG.randbytes(600)).decode()
    lines = "\\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    key_id = RNG.randbytes(20).hex()
    document = (
        '{"type": "service_account", "project_id": "acme-prod", '
        f'"private_key_id": "{key_id}", '
        f'"private_key": "-----BEGIN PRIVATE KEY-----\\n{lines}\\n-----END PRIVATE KEY-----\\n", '
        '"client_email": "deploy@acme-prod.iam.gserviceaccount.com"}'
    )
    kinds = {h.kind: h.value for h in detector.scanner.scan(document) if h.family == "secret"}
    assert kinds["gcp_private_key_id"] == key_id
    assert kinds["private_key"].startswith("-----BEGIN PRIVATE KEY-----") and body[:64] in kinds["private_key"]


def test_slack_token_needs_its_structure(detector):
    token = f"xoxb-{RNG.randint(10**9, 10**10)}-{RNG.randint(10**11, 10**12)}-{chars(string.ascii_letters, 24)}"
    assert [h.kind for h in detector.scanner.scan(f"SLACK={token}")] == ["slack_token"]
    assert detector.scanner.scan("xoxb-123456-short") == []


@pytest.mark.parametrize(
    ("documentation", "real"),
    [
        (
            "DATABASE_URL=postgres://postgres:postgres@localhost:5432/app",
            "postgres://app:Xk9vQ2mLp7Rt@db.prod.internal/app",
        ),
        ("mongodb://admin:admin123@localhost:27017", "mongodb://admin:Xk9vQ2mLp7Rt@localhost:27017"),
        ("postgres://app:devpass1@localhost/app", "mysql://root:hunter22@10.1.2.3/app"),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIy"
            "fQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTgxMjMiLCJyb2xlIjoiYWRtaW4iLCJpYXQiOjE3OTU1MDAwMDB9"
            ".q3Xv9Lk2mPz8RtYw1NbC4dFgHjKl0MnOpQrStUvWxYz",
        ),
    ],
    ids=["default-postgres", "default-mongo", "local-word-password", "jwt-io-sample"],
)
def test_tutorial_credentials_raise_no_alert(detector, documentation, real):
    """Default passwords, local databases with a word for a password, jwt.io's sample token: not secrets; a random
    password (even on localhost) or another token still is (the control)."""
    assert rules(run(detector, chat(completion=documentation))[0]) == set()
    assert rules(run(detector, chat(completion=real))[0]) == {"abw-exfil-secret-output"}


AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ8ztq4Uvb"


@pytest.mark.parametrize(
    "text",
    [
        f"Access key ID: AKIAUJZDEGXDNCF32EPF\nSecret access key: {AWS_SECRET}",  # the console's wording
        f"AWS Secret Access Key: {AWS_SECRET}",
        "postgresql+psycopg2://admin:Xk9vQ2mLp7Rt@db.prod.internal:5432/app",  # SQLAlchemy's driver suffix
        "mysql+pymysql://app:Xk9vQ2mLp7Rt@10.0.0.5/app",
        "redis://:Xk9vQ2mLp7Rt@cache.prod:6379/0",  # Redis has a password and no user
    ],
    ids=["aws-console-prose", "aws-title-case", "sqlalchemy-postgres", "sqlalchemy-mysql", "redis-no-user"],
)
def test_written_forms_of_critical_secrets_are_critical(detector, text):
    detections, _ = run(detector, chat(completion=text))
    assert [(d.rule.id, d.rule.level) for d in detections] == [("abw-exfil-secret-output", "critical")]


def test_a_secret_access_key_label_without_a_key_is_nothing(detector):
    assert (
        run(detector, chat(completion="Secret access key: see the vault. Redis at redis://localhost:6379/0"))[0] == []
    )


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("pypi_token", "pypi-AgEIcHlwaS5vcmc" + chars(string.ascii_letters + string.digits + "-_", 150)),
        ("slack_token", "xoxe.xoxp-1-" + chars(string.ascii_letters + string.digits, 160)),
        ("slack_token", "xoxe-1-" + chars(string.ascii_letters + string.digits, 140)),
    ],
    ids=["pypi", "slack-refresh-user", "slack-refresh"],
)
def test_more_provider_tokens_are_found(detector, kind, value):
    assert [(h.kind, h.value) for h in detector.scanner.scan(f"token: {value} ok") if h.family == "secret"] == [
        (kind, value)
    ]
    assert detector.scanner.scan("pypi-AgEIcHlwaS5vcmcexample and xoxe-1-shorttoken") == []


def test_an_azure_sas_signature_is_a_critical_secret_and_a_lone_sig_parameter_is_not(detector):
    signature = base64.b64encode(bytes(RNG.randrange(256) for _ in range(32))).decode()
    encoded = signature.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    sas = f"https://acct.blob.core.windows.net/c/f.txt?sv=2022-11-02&sp=r&se=2026-12-01&sig={encoded}&spr=https"
    found = [(h.kind, h.value) for h in detector.scanner.scan(sas) if h.family == "secret"]
    assert found == [("azure_sas_signature", encoded)]
    assert [(d.rule.id, d.rule.level) for d in run(detector, chat(completion=sas))[0]] == [
        ("abw-exfil-secret-output", "critical")
    ]
    assert [h for h in detector.scanner.scan(f"https://x.test/?sig={encoded}") if h.family == "secret"] == []


def test_a_twilio_api_key_is_a_secret(detector):
    key = "SK" + chars("0123456789abcdef", 32)
    assert [(h.kind, h.value) for h in detector.scanner.scan(f"TWILIO_KEY_SID {key}") if h.family == "secret"] == [
        ("twilio_api_key", key)
    ]
    assert detector.scanner.scan("SK" + "0" * 32) == []


@pytest.mark.parametrize(
    "leaked",
    [
        "mysql://backup:backup@10.2.3.4/prod",  # the user name as password, on a real host
        "postgresql://admin:admin@prod-db.acme-corp.com/billing",  # a default word, on a real host
        "postgres://app:sunshine1@db:5432/app",  # a compose service name is a real host too
        "mssql://svc_erp:sunshine1@sql01.corp.local/erp",  # so is an Active Directory .local name
    ],
)
def test_a_weak_password_on_a_real_host_is_still_a_critical_secret(detector, leaked):
    assert [(d.rule.id, d.rule.level) for d in run(detector, chat(completion=leaked))[0]] == [
        ("abw-exfil-secret-output", "critical")
    ]
