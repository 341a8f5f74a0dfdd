"""Secret formats: anchors plus validators (checksums, structure, entropy, placeholder and example lists).

Each kind is either a provider token with a recognisable prefix, a structured secret (JWT, PEM block,
connection string) or a generic ``password = '...'`` assignment that must clear an entropy threshold.
"""

from __future__ import annotations

import base64
import binascii
import string
import urllib.parse
import zlib

import msgspec
import orjson

from detectors.base import Detection, Evidence, Findings, RuleInfo
from detectors.exfil.candidates import ALNUM, B64, B64URL, Spec, Valid, extend_over, walk_right
from detectors.exfil.context import EventContext
from detectors.exfil.masking import Masker
from detectors.exfil.measures import shannon_entropy
from detectors.redact import MIN_SCRUB_LENGTH

# Kinds whose exposure in a response or tool call is critical: they open infrastructure, money or all data.
CRITICAL_KINDS = frozenset(
    {
        "aws_secret_access_key",
        "azure_storage_key",
        "azure_sas_signature",
        "gcp_private_key_id",
        "private_key",
        "database_password",
        "stripe_live_key",
        "github_token",
        "github_fine_grained_pat",
    }
)

PLACEHOLDER_WORDS = (
    "example",
    "placeholder",
    "your",
    "xxxx",
    "changeme",
    "change_me",
    "dummy",
    "sample",
    "redacted",
    "****",
    "...",
    "<",
    ">",
    "${",
    "{{",
    "%(",
    "todo",
    "insert",
    "replace",
    "test",
    "secret",
    "password",
    "12345",
    "abcdef",
    "getenv",
    "environ",
    "process.env",
)

# Keys that name, locate or describe a secret rather than hold it (secretName, token_endpoint, tokenizer,
# password_policy, api_key_header, secret_arn ...): their values are names, URLs and paths, never the secret.
METADATA_KEY_SUFFIXES = (
    "name",
    "endpoint",
    "url",
    "uri",
    "path",
    "file",
    "header",
    "type",
    "policy",
    "ref",
    "izer",
    "arn",
)

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ASSIGN_KEY = ALNUM | {"_", "-", "."}
_SEPARATORS = frozenset(" \t\"':=>\\")  # a backslash: quotes escaped inside JSON strings
_UNQUOTED_END = frozenset(" \t\r\n\"'`,;)}]<>\\")
_URL_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'*+,;=%")
# what must follow a keyword for it to be an assignment: a short key suffix, quotes, then `:` or `=`
_ASSIGNMENT_TAIL = r"[A-Za-z0-9_.\-]{0,24}[\\\"' \t]{0,4}[:=]"
_AWS_BODY = frozenset(string.ascii_uppercase + "234567")
_BEARER = ALNUM | frozenset("-._~+/")  # RFC 6750 b64token, its "=" padding taken apart
_MAX_SESSION_TOKEN = 2048  # STS session tokens run to about 1-2 K characters
_JWT_IO_SAMPLE_IAT = 1516239022  # the jwt.io debugger's sample token ({"sub": "1234567890", "name": "John Doe"})
# Passwords that database images, installers and tutorials ship with: a URL holding one opens nothing real.
_DEFAULT_DB_PASSWORDS = frozenset(
    {"postgres", "mysql", "mariadb", "mongo", "mongodb", "redis", "admin", "admin123", "root", "toor", "pass"}
    | {"passwd", "pwd", "guest", "letmein", "qwerty", "default", "rabbitmq", "sa", "oracle", "user", "demo"}
)
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "host.docker.internal"})
_DOCUMENTATION_HOST_SUFFIXES = ("example.com", "example.org", "example.net", ".example", ".test", ".invalid")
_RANDOM_PASSWORD_ENTROPY = 3.0  # bits per character: a random 10+ character password is above, a word below
_MAX_HOST = 253  # characters of a DNS name
_MAX_PASSWORD = 256  # characters of a database URL's password, as of a generic one (_password_like)
_HOST_CHARS = string.ascii_letters + string.digits + "-._"
_IPV6_CHARS = string.hexdigits + ":."
_PARAMETER_CHARS = string.ascii_letters + string.digits + "_.-"
_URL_DELIMITERS = frozenset("/?#")
_BASE64_BODY = ALNUM | {"+", "/"}
# what separates a .netrc file's words: whitespace, also as JSON escapes (a file read by a tool, logged as JSON)
_NETRC_SPACE = r"(?:[ \t\r\n]|\\[nrt]){1,16}"
_NETRC_END = frozenset(" \t\r\n\\\"'")
_DOCKER_AUTHS_REACH = 4096  # how far before an "auth" entry a Docker config's "auths" may open


def is_placeholder(value: str) -> bool:
    """True for documentation values: placeholder words, templating, or a few characters repeated."""
    lowered = value.lower()
    if any(word in lowered for word in PLACEHOLDER_WORDS):
        return True
    return len(set(value)) <= max(2, min(len(value) // 8, 16))  # capped: a long base64 token has ~64 symbols


def _random_enough(body: str, minimum: float) -> bool:
    return shannon_entropy(body) >= minimum and not is_placeholder(body)


def github_checksum_ok(token: str) -> bool:
    """GitHub's new-format tokens end in a 6-char base62 CRC32 of the 30 random characters before it."""
    body, checksum = token[4:-6], token[-6:]
    value = 0
    for char in checksum:
        value = value * 62 + _BASE62.index(char)
    return value == zlib.crc32(body.encode("ascii"))


def base62_crc32(body: str) -> str:
    """The 6-character checksum GitHub appends to ``body`` (used by the fixture generator and tests)."""
    value, digits = zlib.crc32(body.encode("ascii")), []
    for _ in range(6):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _token(minimum_entropy: float, *, prefix_len: int = 0, min_len: int = 0, max_len: int = 10_000, suffix: str = ""):
    """A validator for prefixed provider tokens: length bounds, a fixed suffix, a random-looking body."""

    def validate(token: str, _text: str, _start: int) -> Valid | None:
        if not min_len <= len(token) <= max_len or not token.endswith(suffix):
            return None
        return Valid(token, token) if _random_enough(token[prefix_len:], minimum_entropy) else None

    return validate


def _gcp_key_id(token: str, _text: str, _start: int) -> Valid:
    key_id = token[-41:-1]  # the 40 hex digits inside the closing quote
    return Valid(key_id, key_id, start_offset=len(token) - 41)


def _github(token: str, _text: str, _start: int) -> Valid | None:
    return Valid(token, token) if github_checksum_ok(token) else None


def _aws_key_id(token: str, _text: str, _start: int) -> Valid | None:
    body = token[4:]
    if "EXAMPLE" in token or not set(body) <= _AWS_BODY or len(set(body)) < 8:
        return None
    return Valid(token, token)


def _sas_signature(token: str, text: str, start: int) -> Valid | None:
    """The ``sig`` of an Azure shared access signature URL (it grants what the URL's ``sp`` permits until ``se``):
    a base64 HMAC-SHA256, URL-encoded, in a query that also names the storage service version ``sv``."""
    signature = urllib.parse.unquote(token[5:])  # after "?sig=" or "&sig="
    query = text[max(0, start - 512) : start + 1]
    if "sv=" not in query[query.rfind("?") :] or len(signature) != 44 or not signature.endswith("="):
        return None
    try:
        base64.b64decode(signature, validate=True)
    except binascii.Error:
        return None
    return Valid(token[5:], signature, start_offset=5) if _random_enough(signature, 4.0) else None


def _b64url_json(part: str) -> object:
    try:
        return orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None


def _jwt(token: str, _text: str, _start: int) -> Valid | None:
    parts = token.strip(".").split(".", 3)  # a fourth part is enough to reject: no need to split a long run
    if len(parts) != 3 or len(parts[2]) < 16:
        return None
    header = _b64url_json(parts[0])
    if not isinstance(header, dict) or str(header.get("alg", "none")).lower() == "none":
        return None
    claims = _b64url_json(parts[1])
    if not isinstance(claims, dict) or claims.get("iat") == _JWT_IO_SAMPLE_IAT:  # jwt.io's sample, in every tutorial
        return None
    value = ".".join(parts)
    return Valid(value, value)


def _pem_extend(text: str, start: int, end: int) -> tuple[int, int] | None:
    closing = text.find("-----END", end, end + 16_384)
    if closing < 0:
        return None
    tail = text.find("-----", closing + 8, closing + 64)
    return (start, tail + 5) if tail >= 0 else None


def _pem(token: str, _text: str, _start: int) -> Valid | None:
    header_end = token.find("-----", 10) + 5
    footer = token.rfind("-----END")
    body = token[header_end:footer].replace("\\n", "").replace("\\r", "")
    lines = [line.strip() for line in body.splitlines() if line.strip() and ":" not in line]
    payload = "".join(lines)
    if len(payload) < 64 or "..." in payload or not set(payload) <= B64:
        return None
    return Valid(token, payload)


def _assignment_value(token: str, keyword_end: int, max_value: int = 512) -> tuple[int, str] | None:
    """Offset and value of ``keyword[_suffix] [:=] ['"]value['"]`` starting after the keyword.

    A quoted value's closing quote must lie within ``token``."""
    position = walk_right(token, keyword_end, _ASSIGN_KEY, 40)
    separator_end = walk_right(token, position, _SEPARATORS, 8)
    separator = token[position:separator_end]
    if not any(mark in separator for mark in ":="):
        return None
    quote = separator[-1] if separator and separator[-1] in "\"'" else ""
    value_start = separator_end
    if quote:
        value_end = token.find(quote, value_start, value_start + max_value)
        if value_end < 0:
            return None
        if token[value_end - 1] == "\\":
            value_end -= 1
    else:
        value_end = _first_of(token, _UNQUOTED_END, value_start, value_start + max_value)
    return value_start, token[value_start:value_end]


def _first_of(text: str, stops: frozenset[str], start: int, stop: int) -> int:
    """The first index in ``[start, stop)`` whose character is one of ``stops``, else ``min(stop, len(text))``.

    One ``str.find`` per stop character, each bounded by the best found so far: C speed, where a walk in Python
    would cost a step per character of every (possibly hostile, 512-character) value."""
    stop = min(stop, len(text))
    for char in stops:
        found = text.find(char, start, stop)
        if found >= 0:
            stop = found
    return stop


def _assignment_extend(text: str, start: int, end: int, max_value: int = 512) -> tuple[int, int] | None:
    window = text[start : end + max_value + 88]
    return _value_extend(window, start, walk_right(window, 0, ALNUM, 40), max_value)


def _labelled_extend(text: str, start: int, end: int) -> tuple[int, int] | None:
    """:func:`_assignment_extend` for a keyword of several words (``Secret access key: ...``): the anchor ends at
    its ``:`` or ``=``."""
    return _value_extend(text[start : end + 600], start, end - start - 1, 512)


def _value_extend(window: str, start: int, keyword_end: int, max_value: int) -> tuple[int, int] | None:
    found = _assignment_value(window, keyword_end, max_value)
    if found is None:
        return None
    offset, value = found
    end_of_value = offset + len(value)
    if window[offset - 1 : offset] in ("'", '"'):  # take the closing quote, escaped or not
        end_of_value = window.find(window[offset - 1], end_of_value) + 1
    return start, start + end_of_value


def _long_assignment_extend(text: str, start: int, end: int) -> tuple[int, int] | None:
    return _assignment_extend(text, start, end, _MAX_SESSION_TOKEN)


def _generic(min_entropy: float, min_length: int):
    def validate(token: str, _text: str, _start: int) -> Valid | None:
        keyword_end = walk_right(token, 0, ALNUM, 40)
        found = _assignment_value(token, keyword_end)
        if found is None:
            return None
        offset, value = found
        key = token[: walk_right(token, keyword_end, _ASSIGN_KEY, 40)].lower().rstrip("_-.")
        if key.endswith(METADATA_KEY_SUFFIXES) or not _password_like(value, min_entropy, min_length):
            return None
        return Valid(value, value, start_offset=offset)

    return validate


def _password_like(value: str, min_entropy: float, min_length: int) -> bool:
    """A value that can be a password or key: long and random enough, letters and digits, no placeholder, no
    template or call (``$VAR``, ``get(...)``), no URL."""
    if len(value) < min_length or len(value) > 256 or " " in value or "://" in value or is_placeholder(value):
        return False
    if not any(ch.isdigit() for ch in value) or not any(ch.isalpha() for ch in value):
        return False
    return not value.startswith(("$", "@", "#", "%")) and "(" not in value and shannon_entropy(value) >= min_entropy


def _stated_password_extend(text: str, start: int, end: int) -> tuple[int, int]:
    """The anchor (``password is``, up to an opening quote) and the word after it."""
    return start, _first_of(text, _UNQUOTED_END, end, end + 257)


def _stated_password(min_entropy: float, min_length: int):
    """``The admin password is Vx9kq2LmP7zR4t.``: the word after the phrase, held to the generic value checks
    (which words of prose fail: no digit, too short, too regular)."""

    def validate(token: str, _text: str, _start: int) -> Valid | None:
        offset = max(token.rfind(mark) for mark in " \t\n\"'`") + 1
        value = token[offset:].rstrip(".,:;!?")
        return Valid(value, value, start_offset=offset) if _password_like(value, min_entropy, min_length) else None

    return validate


def _bearer_extend(text: str, start: int, end: int) -> tuple[int, int]:
    right = walk_right(text, end, _BEARER, 4096)
    return start, walk_right(text, right, frozenset("="), 2)


def _bearer(token: str, _text: str, _start: int) -> Valid | None:
    """The credential of an ``Authorization: Bearer`` header (curl ``-H``, HTTP dumps, client code)."""
    offset = token.lower().find("bearer") + len("bearer")
    offset = walk_right(token, offset, frozenset(" "), 4)
    value = token[offset:]
    if len(value) < 20 or not any(ch.isdigit() for ch in value) or not _random_enough(value, 3.5):
        return None
    return Valid(value, value, start_offset=offset)


def _base64_extend(text: str, start: int, end: int) -> tuple[int, int]:
    right = walk_right(text, end, _BASE64_BODY, 4096)
    return start, walk_right(text, right, frozenset("="), 2)


def _basic(min_entropy: float, min_length: int):
    """The credentials of an ``Authorization: Basic`` header (curl ``-H``, HTTP dumps, client code): base64 of
    ``user:password``."""

    def validate(token: str, _text: str, _start: int) -> Valid | None:
        offset = walk_right(token, token.lower().rfind("basic") + len("basic"), frozenset(" "), 4)
        login = _login(token[offset:], min_entropy, min_length)
        return Valid(token[offset:], login, start_offset=offset) if login else None

    return validate


def _docker_auth(min_entropy: float, min_length: int):
    """An ``"auth"`` entry of a Docker ``config.json`` (``{"auths": {"<registry>": {"auth": "<base64>"}}}``): base64
    of ``user:password`` for the registry, as ``docker login`` stores it."""

    def validate(token: str, text: str, start: int) -> Valid | None:
        if '"auths' not in text[max(0, start - _DOCKER_AUTHS_REACH) : start]:
            return None
        offset = token.rfind('"') + 1
        login = _login(token[offset:], min_entropy, min_length)
        return Valid(token[offset:], login, start_offset=offset) if login else None

    return validate


def _login(blob: str, min_entropy: float, min_length: int) -> str | None:
    """The ``user:password`` that base64 ``blob`` decodes to, when its password passes the generic value checks
    (which reject RFC 7617's ``Aladdin:open sesame``, ``user:password`` and other documentation pairs) and the user
    is no documentation address (``jane@example.com``)."""
    try:
        login = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    user, colon, password = login.partition(":")
    if not colon or not user.isprintable() or user.lower().endswith(_DOCUMENTATION_HOST_SUFFIXES):
        return None
    if len(password) > _MAX_PASSWORD:  # a registry's token: ECR's runs to 2 K characters, GCR's is a JSON key
        return login if _random_enough(password, min_entropy) else None
    return login if _password_like(password, min_entropy, min_length) else None


def _netrc_extend(text: str, start: int, end: int) -> tuple[int, int]:
    return start, _first_of(text, _NETRC_END, end, end + _MAX_PASSWORD + 1)


def _netrc(min_entropy: float, min_length: int):
    """The password of a ``.netrc`` entry (``machine <host> login <user> password <password>``, on one line or
    several; curl, git and ftp read it): the word after ``password``, held to the generic value checks; an entry
    for a documentation host (``machine example.com``) is a tutorial's."""

    def validate(token: str, _text: str, _start: int) -> Valid | None:
        words = token.replace("\\n", " ").replace("\\r", " ").replace("\\t", " ").split()
        host, password = words[1].lower(), words[-1]  # the token ends with the password, which holds no space
        if host.endswith(_DOCUMENTATION_HOST_SUFFIXES) or not _password_like(password, min_entropy, min_length):
            return None
        return Valid(password, password, start_offset=len(token) - len(password))

    return validate


def _aws_session_token(token: str, _text: str, _start: int) -> Valid | None:
    found = _assignment_value(token, walk_right(token, 0, ALNUM, 40), _MAX_SESSION_TOKEN)
    if found is None:
        return None
    offset, value = found
    if not 100 <= len(value) <= _MAX_SESSION_TOKEN or not set(value) <= B64 or not _random_enough(value, 4.0):
        return None
    return Valid(value, value, start_offset=offset)


def _aws_secret(token: str, _text: str, _start: int) -> Valid | None:
    keyword_end = token.lower().find("key") + 3  # "Secret access key: ..." as the AWS console writes it
    found = _assignment_value(token, keyword_end)
    if found is None:
        return None
    offset, value = found
    if len(value) != 40 or not set(value) <= B64 or not _random_enough(value, 4.0):
        return None
    return Valid(value, value, start_offset=offset)


def _azure_key(token: str, _text: str, _start: int) -> Valid | None:
    value = token.split("=", 1)[1]
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) not in (32, 64) or is_placeholder(value):
        return None
    return Valid(value, value, start_offset=len(token) - len(value))


def _db_extend(text: str, start: int, end: int) -> tuple[int, int]:
    return start, walk_right(text, end, _URL_CHARS - {"'"}, 1024)


def _db_password(token: str, _text: str, _start: int) -> Valid | None:
    """The password of a database URL (``scheme://user:password@host``).

    The userinfo ends at the last ``@`` a host follows (:func:`_userinfo_end`), as urlsplit and WHATWG end it at
    the authority's last ``@``: a password may hold ``@``, and ``#``, ``/`` or ``?`` too, which generated passwords
    do and ``.env`` files leave unencoded (those parsers would end the authority there and find no password). A
    password shorter than the redactor masks is masked with all the userinfo the URL may hold, so no part of a
    password the parse cut short is left to read."""
    token = token.rstrip(".,;)]")
    user_start = token.find("://") + 3
    password_start = token.find(":", user_start) + 1
    query = _query_start(token, password_start)
    found = _userinfo_end(token, password_start, query)
    if found is None and query < len(token):  # the "query" was in the password: no host before it
        found = _userinfo_end(token, password_start, len(token))
    if found is None:
        return None
    end, host = found
    raw = token[password_start:end]
    password = urllib.parse.unquote(raw)
    if _port_and_path(raw) or is_placeholder(password) or set(password) <= {"*"}:
        return None
    if _default_credentials(urllib.parse.unquote(token[user_start : password_start - 1]), host, password):
        return None
    if len(raw) < MIN_SCRUB_LENGTH:  # masked with the user name and ':' (a password has 3 characters or more)
        widest = _userinfo_end(token, password_start, len(token)) or found
        raw, password_start = token[user_start : widest[0]], user_start
    return Valid(raw, urllib.parse.unquote(raw), start_offset=password_start)


def _userinfo_end(token: str, password_start: int, limit: int) -> tuple[int, str] | None:
    """The last ``@`` before ``limit`` that a host follows, and that host; None when no ``@`` is followed by one.

    The password is at most :data:`_MAX_PASSWORD` characters long, so only the ``@`` within reach are tried."""
    limit = min(limit, password_start + _MAX_PASSWORD + 1)
    at = token.rfind("@", password_start, limit)
    while at >= 0:
        host = _host_at(token, at + 1)
        if host is not None:
            return at, host
        at = token.rfind("@", password_start, at)
    return None


def _host_at(token: str, position: int) -> str | None:
    """The host (lower case, without port or brackets) when ``token[position:]`` starts with a host: a name, an IPv4
    address or an ``[IPv6]`` literal, an optional ``:port``, then the token's end or ``/``, ``?``, ``#`` or ``,``
    (MongoDB lists hosts). ``str.lstrip`` measures each run at C speed: a hostile token holds many ``@``."""
    window = token[position : position + _MAX_HOST + 8]
    if window.startswith("["):
        close = window.find("]")
        if close < 0:
            return None
        host, rest = window[1:close], window[close + 1 :]
        if not host or host.strip(_IPV6_CHARS):
            return None
    else:
        rest = window.lstrip(_HOST_CHARS)
        host = window[: len(window) - len(rest)]
        if not host:
            return None
    if rest.startswith(":"):
        port = rest[1:].lstrip(string.digits)
        if not 1 <= len(rest) - 1 - len(port) <= 5:
            return None
        rest = port
    at_end = position + len(window) == len(token) and not rest
    return host.lower() if at_end or rest[:1] in ("/", "?", "#", ",") else None


def _query_start(token: str, start: int) -> int:
    """Where a URL's query starts: its first ``?`` followed by a parameter and ``=`` (``?sslmode=require``), or the
    token's end. A ``?`` in a password is followed by no such thing, while a query may hold an ``@`` (an e-mail
    address) that is not the userinfo's."""
    mark = token.find("?", start)
    while mark >= 0:
        rest = token[mark + 1 : mark + 66]
        name = len(rest) - len(rest.lstrip(_PARAMETER_CHARS))
        if name and rest[name : name + 1] == "=":
            return mark
        mark = token.find("?", mark + 1)
    return len(token)


def _port_and_path(raw: str) -> bool:
    """``host:5432/db``: what follows the first ``:`` is a port then a path, not a password."""
    cut = _first_of(raw, _URL_DELIMITERS, 0, len(raw))
    return cut < len(raw) and raw[:cut].isdigit()


def _default_credentials(user: str, host: str, password: str) -> bool:
    """A database URL from a tutorial or a local setup (``postgres://postgres:postgres@localhost``): the host is this
    machine or a documentation domain, and the password is the user name, a product's well-known default or a word.
    A weak password on any other host is a real credential, and a leak of it matters the more."""
    if host not in _LOCAL_HOSTS and not host.endswith(_DOCUMENTATION_HOST_SUFFIXES):
        return False
    return (
        password == user
        or password.lower() in _DEFAULT_DB_PASSWORDS
        or not _random_enough(password, _RANDOM_PASSWORD_ENTROPY)
    )


def secret_specs(generic_min_entropy: float, generic_min_length: int) -> list[Spec]:
    """All secret specs; provider-specific ones win over the generic assignment when they overlap."""
    return [
        Spec("aws_access_key_id", "secret", r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b", _aws_key_id),
        Spec(
            "aws_secret_access_key",
            "secret",
            r"(?:aws[_ ]?secret[_ ]?access[_ ]?key|secret[_ ]?access[_ ]?key)" + _ASSIGNMENT_TAIL,  # also in prose
            _aws_secret,
            _labelled_extend,
            caseless=True,
        ),
        Spec(
            "aws_session_token",
            "secret",
            r"(?:aws_?session_?token|x-amz-security-token)" + _ASSIGNMENT_TAIL,
            _aws_session_token,
            _long_assignment_extend,
            caseless=True,
        ),
        Spec("gcp_api_key", "secret", r"\bAIza[0-9A-Za-z_\-]{35}", _token(3.5, prefix_len=4)),
        Spec(
            "gcp_private_key_id",
            "secret",
            r"\"private_key_id\"\s{0,3}:\s{0,3}\"[0-9a-f]{40}\"",
            _gcp_key_id,
        ),
        Spec(
            "azure_storage_key",
            "secret",
            r"(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{40}",
            _azure_key,
            extend_over(B64, 100),
            caseless=True,
        ),
        Spec("github_token", "secret", r"\bgh[pousr]_[A-Za-z0-9]{36}\b", _github),
        Spec("npm_token", "secret", r"\bnpm_[A-Za-z0-9]{36}\b", _github),
        Spec(
            "github_fine_grained_pat",
            "secret",
            r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
            _token(4.0, prefix_len=11),
        ),
        Spec(
            "gitlab_token",
            "secret",
            r"\bglpat-[A-Za-z0-9_\-]{20}",
            _token(3.5, prefix_len=6, max_len=80),
            extend_over(B64URL | {"."}, 80),
        ),
        Spec(
            "slack_token",
            "secret",
            r"\bxox[abposr]-[0-9]{6}",
            _token(3.0, prefix_len=5, min_len=30, max_len=250),
            extend_over(ALNUM | {"-"}, 250),
        ),
        Spec(
            "slack_webhook",
            "secret",
            r"hooks\.slack\.com/services/T[A-Z0-9]{6}",
            _token(3.0, prefix_len=27, min_len=60, max_len=140),
            extend_over(ALNUM | {"/"}, 120),
        ),
        Spec(
            "stripe_live_key",
            "secret",
            r"\b[rs]k_live_[0-9A-Za-z]{16}",
            _token(3.5, prefix_len=8, min_len=32),
            extend_over(ALNUM, 200),
        ),
        Spec(
            "openai_api_key",
            "secret",
            r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20}",
            _token(4.0, prefix_len=8, min_len=48),
            extend_over(B64URL, 300),
        ),
        Spec("openai_api_key", "secret", r"\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b", _token(3.5, prefix_len=3)),
        Spec(
            "anthropic_api_key",
            "secret",
            r"\bsk-ant-(?:api|admin)0[0-9]-[A-Za-z0-9_\-]{20}",
            _token(4.0, prefix_len=14, min_len=100, suffix="AA"),
            extend_over(B64URL, 200),
        ),
        Spec(
            "sendgrid_api_key", "secret", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b", _token(3.5, prefix_len=3)
        ),
        Spec(
            "google_oauth_token",
            "secret",
            r"\bya29\.[A-Za-z0-9_\-]{30}",
            _token(3.5, prefix_len=5, min_len=40, max_len=2048),
            extend_over(B64URL, 2048),
        ),
        Spec(
            "slack_token",
            "secret",
            r"\bxapp-[0-9]-[A-Z0-9]{8,14}-[0-9]{8,16}-[A-Za-z0-9]{32,80}\b",
            _token(3.0, prefix_len=5),
        ),
        Spec(
            "bearer_token",
            "secret",
            r"authorization[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?bearer +[A-Za-z0-9\-._~+/]{8}",
            _bearer,
            _bearer_extend,
            caseless=True,
            priority=1,
        ),
        Spec(
            "http_basic_credentials",
            "secret",
            r"authorization\\?[\"']?[ \t]{0,3}[:=][ \t]{0,3}\\?[\"']?basic +[A-Za-z0-9+/]{8}",
            _basic(generic_min_entropy, generic_min_length),
            _base64_extend,
            caseless=True,
            priority=1,
        ),
        Spec(
            "docker_registry_auth",
            "secret",
            r"\\?\"auth\\?\"[ \t]{0,3}:[ \t]{0,3}\\?\"[A-Za-z0-9+/]{8}",
            _docker_auth(generic_min_entropy, generic_min_length),
            _base64_extend,
            priority=1,
        ),
        Spec(
            "netrc_password",
            "secret",
            rf"\bmachine{_NETRC_SPACE}[^\s\\]{{1,253}}{_NETRC_SPACE}"
            rf"(?:(?:login|account){_NETRC_SPACE}[^\s\\]{{1,128}}{_NETRC_SPACE}){{0,2}}password{_NETRC_SPACE}",
            _netrc(generic_min_entropy, generic_min_length),
            _netrc_extend,
            priority=1,
        ),
        Spec("groq_api_key", "secret", r"\bgsk_[A-Za-z0-9]{52}\b", _token(4.0, prefix_len=4)),
        Spec(
            "azure_sas_signature",
            "secret",
            r"[?&]sig=[A-Za-z0-9%+/]{40}",
            _sas_signature,
            extend_over(ALNUM | set("%+/="), 80),
        ),
        Spec("twilio_api_key", "secret", r"\bSK[0-9a-f]{32}\b", _token(3.3, prefix_len=2)),
        Spec(  # PyPI API tokens: a macaroon whose base64 starts with the issuer, "pypi.org"
            "pypi_token",
            "secret",
            r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{16}",
            _token(4.0, prefix_len=21, min_len=80, max_len=400),
            extend_over(B64URL, 400),
        ),
        Spec(  # Slack's refreshable tokens: xoxe.xoxp-1-..., xoxe-1-...
            "slack_token",
            "secret",
            r"\bxoxe(?:\.xox[bp])?-[0-9]-[A-Za-z0-9]{16}",
            _token(3.5, prefix_len=10, min_len=40, max_len=300),
            extend_over(ALNUM | {"-", "."}, 300),
        ),
        Spec("huggingface_token", "secret", r"\bhf_[A-Za-z]{34}\b", _token(3.8, prefix_len=3)),
        Spec("replicate_token", "secret", r"\br8_[A-Za-z0-9]{37}\b", _token(4.0, prefix_len=3)),
        Spec("xai_api_key", "secret", r"\bxai-[A-Za-z0-9]{80}\b", _token(4.0, prefix_len=4)),
        Spec("perplexity_api_key", "secret", r"\bpplx-[A-Za-z0-9]{48}\b", _token(4.0, prefix_len=5)),
        Spec("jwt", "secret", r"\beyJ[A-Za-z0-9_\-]{10}", _jwt, extend_over(B64URL | {"."}, 4096)),
        Spec(
            "private_key",
            "secret",
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
            _pem,
            _pem_extend,
        ),
        Spec(
            "database_password",
            "secret",
            # a driver after the scheme (SQLAlchemy's postgresql+psycopg2://, mongodb+srv://); Redis has no user
            r"\b(?:postgres(?:ql)?|mysql|mariadb|mongodb|rediss?|amqps?|mssql|sqlserver)(?:\+[a-z0-9]{1,16})?"
            r"://[^\s:/@]{0,64}:",
            _db_password,
            _db_extend,
            caseless=True,
        ),
        Spec(
            "generic_secret",
            "secret",
            r"(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|auth[_\-]?key|credentials?)"
            + _ASSIGNMENT_TAIL,
            _generic(generic_min_entropy, generic_min_length),
            _assignment_extend,
            caseless=True,
            priority=1,
        ),
        Spec(
            "generic_secret",
            "secret",
            r"\b(?:password|passphrase|passcode)[ \t]{1,3}(?:is|was|remains|(?:set|changed|reset) to)[ \t]{1,3}[\"'`]?",
            _stated_password(generic_min_entropy, generic_min_length),
            _stated_password_extend,
            caseless=True,
            priority=1,
        ),
    ]


SECRET_IN_OUTPUT = RuleInfo(
    id="abw-exfil-secret-output",
    name="Secret disclosed in a model response or tool call",
    category="secret_exposure",
    level="high",
    description="A validated credential appears in the model's response or in the arguments of a tool call it made.",
    atlas=("AML.T0055", "AML.T0057"),
    owasp=("LLM02:2025",),
)
SECRET_IN_INPUT = RuleInfo(
    id="abw-exfil-secret-input",
    name="Secret sent to the model",
    category="secret_exposure",
    level="medium",
    description="A validated credential was pasted into a prompt, returned by a tool or retrieved into the context, "
    "so it now sits with the model provider and in the conversation log.",
    atlas=("AML.T0055",),
    owasp=("LLM02:2025",),
)


class SecretExposureCheck:
    """Counts the secrets of this turn and alerts: outputs high/critical, inputs medium."""

    def run(self, context: EventContext, findings: Findings, masker: Masker) -> list[Detection]:
        current = [(s, h) for s, h in context.hits("secret", new=True)]
        if current:
            findings.fields["gen_ai.security.secrets"] = {
                "count": len(current),
                "types": sorted({h.kind for _, h in current}),
                "fields": sorted({s.field for s, _ in current}),
            }
        detections = []
        for side, base_rule in (("output", SECRET_IN_OUTPUT), ("input", SECRET_IN_INPUT)):
            hits = [(s, h) for s, h in current if s.side == side]
            if not hits:
                continue
            kinds = sorted({h.kind for _, h in hits})
            critical = side == "output" and CRITICAL_KINDS.intersection(kinds)
            rule = msgspec.structs.replace(base_rule, level="critical") if critical else base_rule
            evidence = [
                Evidence(
                    field=s.field,
                    snippet=masker.snippet(s.text, h.start, h.end, label=h.kind),
                    start=h.start,
                    end=h.end,
                    detail=f"{h.kind} in {s.field}",
                )
                for s, h in hits[:20]
            ]
            event = context.event
            detections.append(
                Detection(
                    rule=rule,
                    event_ids=[event.id],
                    timestamp=event.timestamp,
                    identity=event.identity,
                    message=f"{len(hits)} secret(s) ({', '.join(kinds)}) in the {side}",
                    score=0.95 if side == "output" else 0.7,
                    evidence=evidence,
                )
            )
        return detections
