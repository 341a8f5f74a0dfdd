"""PII formats: anchors plus validators (python-stdnum checksums, Luhn and card brands, digit counts).

Identifiers that are bare digit runs (German tax id, Dutch BSN, Polish PESEL, NHS number) are accepted only with
a naming keyword just before them; formats with their own shape (SSN with dashes, French NIR, Spanish DNI,
Italian codice fiscale) stand alone because their checksums keep false positives rare.
"""

from __future__ import annotations

import ipaddress
import string
from types import SimpleNamespace

import msgspec
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.us import ssn

from detectors.base import Detection, Evidence, Findings, RuleInfo
from detectors.event import TOOL_ARGUMENTS
from detectors.exfil.candidates import ALNUM, Hit, Spec, Valid, is_boundary, walk_left, walk_right
from detectors.exfil.context import EventContext, Segment
from detectors.exfil.masking import Masker
from detectors.exfil.measures import words

# PII kinds whose disclosure is high severity on its own; the rest (email, phone, ip) start at medium.
HIGH_KINDS = frozenset(
    {
        "payment_card",
        "iban",
        "us_ssn",
        "gb_nhs",
        "de_idnr",
        "fr_nir",
        "es_dni",
        "nl_bsn",
        "it_codice_fiscale",
        "pl_pesel",
    }
)

EXAMPLE_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "test", "invalid", "localhost", "example")
# Values printed in every payment, banking and identity tutorial (processors' test cards, the IBAN registry's and
# Wikipedia's example IBANs, advertised or example SSNs and DNI) and the public DNS resolvers: a coding assistant
# writes them daily. They are still found (and masked), but their disclosure raises no alert.
DOCUMENTATION_VALUES = frozenset(
    {
        # test cards of Stripe, Adyen, Braintree and PayPal sandboxes
        "4242424242424242", "4000056655665556", "4111111111111111", "4012888888881881", "4000000000000002",
        "4000000000009995", "4000000000000077", "4000002500003155", "4000000000003220", "4000000000000341",
        "5555555555554444", "2223003122003222", "5200828282828210", "5105105105105100", "5431111111111111",
        "378282246310005", "371449635398431", "6011111111111117", "6011000990139424", "3566002020360505",
        "3530111333300000", "6200000000000005",
        # IBANs from the IBAN registry, Wikipedia and bank documentation
        "DE89370400440532013000", "GB82WEST12345698765432", "GB29NWBK60161331926819", "GB33BUKB20201555555555",
        "FR1420041010050500013M02606", "NL91ABNA0417164300", "ES9121000418450200051332", "IT60X0542811101000000123456",
        "CH9300762011623852957", "BE68539007547034",
        # SSNs: the commonest example, the wallet-insert one (Woolworth, 1938) and an advertised one
        "123456789", "078051120", "219099999",
        # Spanish DNI of every example
        "12345678Z",
        # public DNS resolvers
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112", "208.67.222.222", "208.67.220.220",
    }
)  # fmt: skip
# Local parts of role addresses (a team's inbox, not a person's): disclosed, they are not personal data.
ROLE_MAILBOXES = frozenset(
    {"support", "info", "help", "contact", "sales", "billing", "security", "privacy", "abuse", "noreply"}
    | {"no-reply", "webmaster", "postmaster", "hostmaster", "press", "hello", "team", "legal", "careers", "jobs"}
)
FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "ts", "py", "json", "md"})

_EMAIL_LOCAL = ALNUM | set("._%+-")
_EMAIL_DOMAIN = ALNUM | set(".-")
_PHONE = frozenset(string.digits + " .-()")
_CARD = frozenset(string.digits + " -")
_IBAN = frozenset(string.ascii_uppercase + string.digits + " ")
_CONTEXT_WINDOW = 48
_LABEL_WINDOW = 24
_CARD_TAIL_DIGITS = 4  # an expiry ("12/27" leaves "12") or a CVV (3-4 digits) after a card
# Words that label a number as an identifier of a thing, not of a person (an order, a ticket, a part).
THING_LABELS = frozenset(
    {
        "order",
        "ticket",
        "part",
        "sku",
        "tracking",
        "invoice",
        "ref",
        "case",
        "room",
        "serial",
        "lot",
        "build",
        "version",
        "model",
        "item",
        "batch",
    }
)
# Words that label a number as a person's (a card, an SSN, a phone): such a label wins over a "#" before the number.
PERSON_LABELS = frozenset(
    {"card", "ssn", "tel", "phone", "mobile", "iban", "account", "acct", "nhs", "passport"}
    | {"cc", "visa", "mastercard", "amex", "credit", "debit"}
)
# Words that may stand between a label and its number ("order number is", "card no.", "tel nr").
LABEL_CONNECTORS = frozenset({"number", "no", "nr", "num", "id", "code", "is", "was"})


def labelled_as_thing(text: str, start: int) -> bool:
    """True when the label just before ``start`` names the number as an order, ticket, part ... number.

    The label is the nearest word before the number that is not a connector ("number", "no", "is" ...); "#" right
    before the number (after that word) labels it a thing too, unless the label is a person's ("Card #:")."""
    before = text[max(0, start - _LABEL_WINDOW) : start]
    label = next((word for word in reversed(words(before)) if word not in LABEL_CONNECTORS), None)
    if label in PERSON_LABELS:
        return False
    gap = before[before.lower().rfind(label) + len(label) :] if label else before
    return "#" in gap or label in THING_LABELS


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _email_extend(text: str, start: int, end: int) -> tuple[int, int]:
    at = text.index("@", start, end)
    left = walk_left(text, at, _EMAIL_LOCAL, 64)
    right = walk_right(text, at + 1, _EMAIL_DOMAIN, 253)
    while right > at + 1 and text[right - 1] in ".-":
        right -= 1
    return left, right


def _email(token: str, text: str, start: int) -> Valid | None:
    local, _, domain = token.partition("@")
    domain = domain.lower()
    labels = domain.split(".")
    if not local or local[0] == "." or local[-1] == "." or len(labels) < 2:
        return None
    tld = labels[-1]
    if not tld.isalpha() or len(tld) < 2 or tld in FILE_SUFFIXES or not all(labels):
        return None
    if any(domain == d or domain.endswith("." + d) for d in EXAMPLE_EMAIL_DOMAINS):
        return None
    end = start + len(token)
    if text[end : end + 1] == ":" and _is_path(text[end + 1 : end + 256]):  # git@github.com:acme/app.git, SSH
        return None
    return Valid(token, token.lower(), alertable=local.lower() not in ROLE_MAILBOXES)


def _is_path(text: str) -> bool:
    """Whether ``text`` starts with a repository path (``acme/app.git``), as after an scp-style SSH address; an
    e-mail address followed by ``:password`` (a dumped credential) is not one."""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    return "/" in word or word.endswith(".git")


def _phone_extend(text: str, start: int, end: int) -> tuple[int, int]:
    right = walk_right(text, end, _PHONE, 24)
    while right > end and not text[right - 1].isdigit():
        right -= 1
    return start, right


def _phone(min_digits: int, max_digits: int):
    def validate(token: str, text: str, start: int) -> Valid | None:
        digits = _digits(token)
        if not min_digits <= len(digits) <= max_digits or not is_boundary(text, start + len(token)):
            return None
        if text[start - 1 : start] in ("-", ".", "/") or len(set(digits)) < 4 or labelled_as_thing(text, start):
            return None
        return Valid(token, digits[-9:])

    return validate


def _card_extend(text: str, start: int, end: int) -> tuple[int, int]:
    right = walk_right(text, end, _CARD, 16)
    while right > end and not text[right - 1].isdigit():
        right -= 1
    return start, right


def card_brand(number: str) -> str | None:
    """The card brand whose prefix and length ``number`` has, or None."""
    length, two, four = len(number), int(number[:2]), int(number[:4])
    if number[0] == "4" and length in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return "mastercard"
    if two in (34, 37) and length == 15:
        return "amex"
    if (number.startswith(("6011", "65")) or 644 <= int(number[:3]) <= 649) and 16 <= length <= 19:
        return "discover"
    if 3528 <= four <= 3589 and 16 <= length <= 19:
        return "jcb"
    return None


def _card(token: str, text: str, start: int) -> Valid | None:
    """A card number, also when the walk took in a trailing expiry or CVV ("4111 ... 1111 12/27", "... 4444 737"):
    the token is cut back at its separators, dropping at most :data:`_CARD_TAIL_DIGITS` trailing digits."""
    if not is_boundary(text, start - 1) or labelled_as_thing(text, start):
        return None
    all_digits, candidate = len(_digits(token)), token
    while True:
        number = _digits(candidate)
        if len({ch for ch in candidate if not ch.isdigit()}) <= 1 and "  " not in candidate and _is_card(number):
            return Valid(candidate, number, alertable=number not in DOCUMENTATION_VALUES)
        cut = max(candidate.rfind(" "), candidate.rfind("-"))
        if cut < 0 or all_digits - len(_digits(candidate[:cut])) > _CARD_TAIL_DIGITS:
            return None
        candidate = candidate[:cut].rstrip(" -")


def _is_card(number: str) -> bool:
    return 13 <= len(number) <= 19 and card_brand(number) is not None and luhn.is_valid(number)


def _iban_extend(text: str, start: int, end: int) -> tuple[int, int]:
    right = walk_right(text, end, _IBAN, 42)
    return start, right


def _iban(token: str, _text: str, _start: int) -> Valid | None:
    token = token.rstrip()
    while len(token) >= 15:
        if iban.is_valid(token):
            compact = iban.compact(token)
            return Valid(token, compact, alertable=compact not in DOCUMENTATION_VALUES)
        cut = token.rfind(" ")
        if cut < 0:
            return None
        token = token[:cut]
    return None


def _checked(module, *, keywords: tuple[str, ...] = ()):
    """A validator from a python-stdnum module; with ``keywords`` one of them must come just before, without
    them the number must not be labelled as a thing's identifier."""

    def validate(token: str, text: str, start: int) -> Valid | None:
        if not is_boundary(text, start - 1) or not is_boundary(text, start + len(token)):
            return None
        if not keywords and labelled_as_thing(text, start):
            return None
        if keywords:
            before = text[max(0, start - _CONTEXT_WINDOW) : start].lower()
            if not any(word in before for word in keywords):
                return None
        if not module.is_valid(token):
            return None
        compact = module.compact(token)
        return Valid(token, compact, alertable=compact not in DOCUMENTATION_VALUES)

    return validate


# An SSN written with spaces or none (``536 90 4721``), which python-stdnum's own compaction does not remove.
_SPACED_SSN = SimpleNamespace(
    is_valid=lambda value: ssn.is_valid(value.replace(" ", "")),
    compact=lambda value: ssn.compact(value.replace(" ", "")),
)


def _ip(token: str, text: str, start: int) -> Valid | None:
    end = start + len(token)
    if text[start - 1 : start] == "." or (text[end : end + 1] == "." and text[end + 1 : end + 2].isdigit()):
        return None
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return None
    return Valid(token, str(address), alertable=address.is_global and str(address) not in DOCUMENTATION_VALUES)


def pii_specs() -> list[Spec]:
    """All PII specs; context-checked national ids win over phone numbers with the same digits."""
    return [
        Spec("email", "pii", r"[A-Za-z0-9._%+\-]@[A-Za-z0-9]", _email, _email_extend, priority=1),
        Spec("phone", "pii", r"\+[1-9][0-9]{0,2}[ .\-]?\(?[0-9]{1,4}", _phone(8, 15), _phone_extend, priority=2),
        Spec("phone", "pii", r"\(?\b[2-9][0-9]{2}\)?[ .\-]?[2-9][0-9]{2}[ .\-][0-9]{4}\b", _phone(10, 10), priority=2),
        Spec("phone", "pii", r"\b0[1-9][0-9]{2,3} [0-9]{3} ?[0-9]{3,4}\b", _phone(10, 11), priority=2),
        Spec("phone", "pii", r"\b0[1-9](?:[ .][0-9]{2}){4}\b", _phone(10, 10), priority=2),
        Spec("phone", "pii", r"\b0[1-9][0-9] [0-9]{4} [0-9]{4}\b", _phone(11, 11), priority=2),  # 020 7946 0958
        Spec(
            "phone",
            "pii",
            r"\b1[ .\-]\(?[2-9][0-9]{2}\)?[ .\-][2-9][0-9]{2}[ .\-][0-9]{4}\b",
            _phone(11, 11),
            priority=2,
        ),
        Spec("payment_card", "pii", r"\b[2-6][0-9]{3}[ \-]?[0-9]{4}", _card, _card_extend),
        Spec("iban", "pii", r"\b[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}", _iban, _iban_extend),
        Spec("us_ssn", "pii", r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", _checked(ssn)),
        Spec(
            "us_ssn",
            "pii",
            r"\b[0-9]{3} ?[0-9]{2} ?[0-9]{4}\b",
            _checked(_SPACED_SSN, keywords=("ssn", "social security")),
        ),
        Spec("gb_nhs", "pii", r"\b[0-9]{3}[ \-]?[0-9]{3}[ \-]?[0-9]{4}\b", _checked(nhs, keywords=("nhs",))),
        Spec(
            "de_idnr",
            "pii",
            r"\b[1-9][0-9]{10}\b",
            _checked(idnr, keywords=("steuer", "idnr", "identifikationsnummer", "tax id")),
        ),
        Spec("pl_pesel", "pii", r"\b[0-9]{11}\b", _checked(pesel, keywords=("pesel",))),
        Spec(
            "nl_bsn",
            "pii",
            r"\b[0-9]{9}\b|\b[0-9]{4}\.[0-9]{2}\.[0-9]{3}\b",
            _checked(bsn, keywords=("bsn", "burgerservicenummer", "sofinummer")),
        ),
        Spec(
            "fr_nir", "pii", r"\b[12] ?[0-9]{2} ?[0-9]{2} ?[0-9][0-9AB] ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}\b", _checked(nir)
        ),
        Spec("es_dni", "pii", r"\b[0-9]{8}-?[A-Z]\b", _checked(dni)),
        Spec(
            "it_codice_fiscale",
            "pii",
            r"\b[A-Z]{6}[0-9]{2}[A-EHLMPRST][0-9]{2}[A-Z][0-9]{3}[A-Z]\b",
            _checked(codicefiscale),
        ),
        Spec("ip_address", "pii", r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", _ip, priority=3),
    ]


PII_DISCLOSURE = RuleInfo(
    id="abw-exfil-pii-output",
    name="PII disclosed that the user did not supply",
    category="pii_exposure",
    level="medium",
    description="The model's response or a tool call it made holds personal data that the user did not type in: "
    "it came from a tool, a retrieved document, an earlier conversation or the model itself.",
    atlas=("AML.T0057",),
    owasp=("LLM02:2025",),
)
_MANY_VALUES = 5


class PiiExposureCheck:
    """Counts this turn's PII and alerts on PII in outputs that the user did not supply."""

    def run(self, context: EventContext, findings: Findings, masker: Masker) -> list[Detection]:
        current = list(context.hits("pii", new=True))
        if current:
            findings.fields["gen_ai.security.pii"] = {
                "count": len(current),
                "types": sorted({h.kind for _, h in current}),
                "fields": sorted({s.field for s, _ in current}),
            }
        user_keys = context.user_keys()
        inputs = context.input_values()
        disclosed: dict[str, tuple[Segment, Hit]] = {}
        for segment, hit in current:
            key = f"pii:{hit.kind}:{hit.key}"
            if hit.kind == "email" and (
                segment.field == TOOL_ARGUMENTS or context.profile.email_domain_allowed(hit.key.rpartition("@")[2])
            ):
                continue  # a recipient address, or the organisation's own business contact: not disclosed PII
            if segment.side == "output" and hit.alertable and key not in user_keys:
                disclosed.setdefault(key, (segment, hit))
        if not disclosed:
            return []
        kinds = sorted({h.kind for _, h in disclosed.values()})
        level = "high" if HIGH_KINDS.intersection(kinds) or len(disclosed) >= _MANY_VALUES else "medium"
        evidence = []
        for key, (segment, hit) in list(disclosed.items())[:20]:
            origin = inputs.get(key)
            source = f"first seen in {origin[0].field}" if origin else "not in the input"
            evidence.append(
                Evidence(
                    field=segment.field,
                    snippet=masker.snippet(segment.text, hit.start, hit.end, label=hit.kind),
                    start=hit.start,
                    end=hit.end,
                    detail=f"{hit.kind} {source}; disclosed in {segment.field}",
                )
            )
        event = context.event
        return [
            Detection(
                rule=msgspec.structs.replace(PII_DISCLOSURE, level=level),
                event_ids=[event.id],
                timestamp=event.timestamp,
                identity=event.identity,
                message=f"{len(disclosed)} PII value(s) ({', '.join(kinds)}) disclosed that the user did not supply",
                score=0.85 if level == "high" else 0.6,
                evidence=evidence,
            )
        ]
