"""Translate a rule's RE2 regex into a Lucene regex that finds the same texts in a lower-cased keyword field.

The stream engine *searches* text with RE2; Lucene *matches a whole term* with its own dialect, where ``#``, ``@``,
``&``, ``~``, ``"``, ``<`` and ``>`` are operators, ``\\x27`` or ``\\n`` are plain letters, and there are no anchors or
word boundaries. :func:`to_lucene` parses the RE2 pattern and writes it again for Lucene:

* literals are escaped for Lucene, escapes (``\\x27``, ``\\n``, ``\\t``) become the characters they name, and
  ``\\w``, ``\\d``, ``.`` (no newline unless ``s``) become the classes RE2 means (ASCII, like RE2);
* letters take what RE2's case-insensitive mode takes (``s`` also finds ``ſ``), then are lower-cased: the ``.lc``
  sub-field is lower-cased by its normalizer;
* ``\\b``, ``\\B``, ``^`` and ``$`` are resolved from the characters that can stand on each side: inside the pattern
  they are either always true (dropped) or never true (that branch is dropped); at the pattern's edges the padding
  that makes a search out of a whole-term match is split by what it ends with (a word character, a newline,
  anything else, or nothing), so ``\\bignore`` becomes ``(.{0,}[^a-z0-9_])?(ignore).{0,}``; a boundary next to a
  group or a class of both kinds of character is first moved into each case (``(rules|orders)\\b``);
* each top-level branch becomes a regex of its own (:attr:`LuceneRegex.alternatives`, one query clause each), so
  that Elasticsearch can build every automaton.

What cannot be written exactly is written as a superset (the hunting query finds at least what the engine finds)
and named in :attr:`LuceneRegex.approximations`: a case-sensitive group (the field has no case left), a boundary
whose sides still hold both kinds of character (inside a repeated group: ``(\\bfoo)+``), a counted run of a class
longer than :data:`MAX_COUNT` (Elasticsearch cannot build the automaton of ``.{0,}=[^&]{16}``). One difference is
too small to report: Lucene's ``\\s`` also takes the vertical tab. Unicode classes (``\\pL``), ``\\Q...\\E``
and POSIX classes raise :class:`NotImplementedError`: the rule is reported as not convertible.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import re2

# Character groups that decide every assertion RE2 has: word (ASCII, as RE2's \b and \w), newline, anything else.
WORD, NEWLINE, OTHER = 1, 2, 4
EDGE = 8  # no character: the start or end of the text
_SIDES = (EDGE, WORD, NEWLINE, OTHER)  # what the padding around a match can end or start with
_PAIRS = tuple(itertools.product(_SIDES, repeat=2))
MAX_COUNT = 6  # the longest counted run of a class that is written as such (see _shorten_counts)
_WORD_CODES = frozenset(itertools.chain(range(48, 58), range(65, 91), range(97, 123), (95,)))
_SPACE_CODES = frozenset((9, 10, 12, 13, 32))  # RE2's \s
_DIGIT_CODES = frozenset(range(48, 58))
_ASCII = frozenset(range(128))
_LOWER_ASCII = _ASCII - frozenset(range(65, 91))  # what a lower-cased field can hold
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_PERL_CLASSES = {"d": _DIGIT_CODES, "s": _SPACE_CODES, "w": _WORD_CODES}
_LUCENE_SPECIAL = frozenset(
    '.?+*|{}[]()"\\#@&<>~^$-'
)  # Lucene's operators, and RE2's (kept for readers); '/' is the backend's
_GROUP_CLASS = {
    WORD: "[a-z0-9_]",
    NEWLINE: "\n",
    OTHER: "[^a-z0-9_\n]",
    WORD | NEWLINE: "[a-z0-9_\n]",
    WORD | OTHER: "[^\n]",
    NEWLINE | OTHER: "[^a-z0-9_]",
}


@dataclass(frozen=True)
class LuceneRegex:
    """Lucene regexes for whole-term matching, one per top-level branch of the pattern (a text matches the pattern
    when it matches any), and what they find beyond the RE2 pattern (empty when exact)."""

    alternatives: tuple[str, ...]
    approximations: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """All alternatives as one regex (Elasticsearch may find it too big to search: prefer one per clause)."""
        if len(self.alternatives) == 1:
            return self.alternatives[0]
        return "|".join(f"({alternative})" for alternative in self.alternatives)


def to_lucene(pattern: str, *, dotall: bool = False, multiline: bool = False) -> LuceneRegex:
    """Translate a case-insensitive RE2 search ``pattern`` into a Lucene regex over the lower-cased text."""
    parser = _Parser(pattern, _Flags(caseless=True, dotall=dotall, multiline=multiline))
    core = parser.parse()
    notes: list[str] = list(parser.notes)
    _shorten_counts(core, notes)
    _split_beside_boundaries(core)
    _Flow(core).resolve(notes)
    # Each top-level branch is a regex of its own: only branches whose edges matter are written more than once, and
    # each automaton stays small enough for Elasticsearch to build.
    alternatives: list[str] = []
    writer = _Writer()
    for branch in _top_branches(core):
        body, text = _branch(branch, writer)
        if body is not None:
            text = f".{{0,}}({body}).{{0,}}"
        if text is not None and text not in alternatives:
            alternatives.append(text)
    if not alternatives:
        raise NotImplementedError(f"the regex {pattern!r} can never match")
    return LuceneRegex(tuple(alternatives), tuple(dict.fromkeys(notes)))


def _branch(items: list[_Node], writer: _Writer) -> tuple[str | None, str | None]:
    """A top-level branch as a body for the shared padding, or (None, its own padded text); (None, None): never
    matches. A branch whose leading items depend on what precedes the match and trailing items on what follows is
    written as (ways to start)(middle)(ways to end), otherwise once per kind of padding."""
    table = {(start, end): [writer.emit(item, start, end) for item in items] for start, end in _PAIRS}
    if all(row == table[EDGE, EDGE] for row in table.values()):
        row = table[EDGE, EDGE]
        return (None, None) if None in row else (_joined(items, row), None)
    by_start = [any(len({table[s, e][i] for s in _SIDES}) > 1 for e in _SIDES) for i in range(len(items))]
    by_end = [any(len({table[s, e][i] for e in _SIDES}) > 1 for s in _SIDES) for i in range(len(items))]
    head = max((i for i, dep in enumerate(by_start) if dep), default=-1) + 1
    tail = min((i for i, dep in enumerate(by_end) if dep), default=len(items))
    if head > tail:
        return None, _padded_product(items, table)
    row = table[EDGE, EDGE]
    middle = [row[i] for i in range(head, tail)]
    starts = _sides(items[:head], {side: table[side, EDGE][:head] for side in _SIDES})
    ends = _sides(items[tail:], {side: table[EDGE, side][tail:] for side in _SIDES})
    if None in middle or not starts or not ends:
        return None, None
    text = _joined(items[head:tail], middle)
    before = "|".join(f"{_padding(sides, before=True)}{body}" for body, sides in starts.items())
    after = "|".join(f"{body}{_padding(sides, before=False)}" for body, sides in ends.items())
    return None, f"{_alternation(before, len(starts))}({text}){_alternation(after, len(ends))}"


def _sides(items: list[_Node], rows: dict[int, list[str | None]]) -> dict[str, frozenset[int]]:
    """The texts of ``items`` for each kind of padding beside them, and which kinds give each text."""
    texts: dict[str, frozenset[int]] = {}
    for side, row in rows.items():
        if None not in row:
            text = _joined(items, row)
            key = f"({text})" if text else ""
            texts[key] = texts.get(key, frozenset()) | {side}
    return texts


def _alternation(text: str, count: int) -> str:
    return f"({text})" if count > 1 else text


def _padded_product(items: list[_Node], table: dict[tuple[int, int], list[str | None]]) -> str | None:
    shapes: dict[str, set[tuple[int, int]]] = {}
    for pair, row in table.items():
        if None not in row:
            shapes.setdefault(_joined(items, row), set()).add(pair)
    alternatives = [
        f"{_padding(starts, before=True)}({body}){_padding(ends, before=False)}"
        for body, pairs in shapes.items()
        for starts, ends in _rectangles(pairs)
    ]
    return "|".join(f"({a})" for a in alternatives) if alternatives else None


def _shorten_counts(node: _Node, notes: list[str]) -> None:
    """Write ``[...]{16}`` as ``[...]{6,}`` and ``.{0,50}`` as ``.{0,}``: a long counted run of a class after
    ``.{0,}`` makes an automaton too big for Elasticsearch to build (a ``query_string`` then finds nothing, silently).
    Without the bound the query finds more, never less."""
    if isinstance(node, _Alt):
        for branch in node.branches:
            for item in branch:
                _shorten_counts(item, notes)
    elif isinstance(node, _Repeat):
        _shorten_counts(node.node, notes)
        single = isinstance(node.node, _Chars) and len(node.node.codes & _LOWER_ASCII) <= 1 and not node.node.wide
        if not single and max(node.low, node.high or 0) > MAX_COUNT:
            node.low, node.high = min(node.low, MAX_COUNT), None
            notes.append(f"a run counted beyond {MAX_COUNT} is searched as {node.low} or more")


def _split_beside_boundaries(node: _Node) -> None:
    """Give each ``\\b`` and ``\\B`` one kind of character on a side where it had both: a class of word and other
    characters is split (``previou[sſ]\\b`` becomes ``previou(s\\b|ſ\\b)``: ``ſ`` is not a word character for
    RE2), and a boundary next to a group goes into each of its branches (``(rules|orders)\\b``), so that it can
    be decided."""
    if isinstance(node, _Repeat):
        _split_beside_boundaries(node.node)
        return
    if not isinstance(node, _Alt):
        return
    for branch in node.branches:
        index = 0
        while index < len(branch):
            item = branch[index]
            if isinstance(item, _Assert) and item.kind in "bB":
                if index > 0 and (split := _beside(branch[index - 1], item, before=True)) is not None:
                    branch[index - 1 : index + 1] = split
                    continue
                if index + 1 < len(branch) and (split := _beside(branch[index + 1], item, before=False)) is not None:
                    branch[index : index + 2] = split
                    continue
            index += 1
        for item in branch:
            _split_beside_boundaries(item)


def _beside(neighbour: _Node, boundary: _Assert, *, before: bool) -> list[_Node] | None:
    """``neighbour`` with ``boundary`` moved into it (``before``: the neighbour precedes it), or None."""
    if isinstance(neighbour, _Alt):
        copies = [boundary.copy() for _ in neighbour.branches]
        return [_Alt([[*b, c] if before else [c, *b] for b, c in zip(neighbour.branches, copies, strict=True)])]
    if isinstance(neighbour, _Repeat) and (neighbour.low, neighbour.high) == (0, 1):
        present = _beside(neighbour.node, boundary, before=before)
        inner = [neighbour.node, boundary.copy()]
        absent = [boundary.copy()]
        return [_Alt([present or (inner if before else inner[::-1]), absent])]
    return _split_chars(neighbour, boundary, before=before)


def _split_chars(neighbour: _Node, boundary: _Assert, *, before: bool) -> list[_Node] | None:
    """``neighbour`` and ``boundary`` rewritten as one branch per kind of character (None: nothing to split)."""
    repeat = neighbour if isinstance(neighbour, _Repeat) else None
    if repeat is not None and repeat.high == 0:  # C{0}: nothing there
        return None
    if repeat is not None and repeat.low == 0:  # C* beside it: C+ beside it, or nothing
        present = _split_chars(_Repeat(repeat.node, 1, repeat.high), boundary, before=before)
        absent = [boundary.copy()]
        return None if present is None else [_Alt([present, absent])]
    chars = repeat.node if repeat is not None else neighbour
    if not isinstance(chars, _Chars) or chars.groups() & WORD == 0 or chars.groups() == WORD:
        return None
    word = _Chars(chars.codes & _WORD_CODES)
    other = _Chars(chars.codes - _WORD_CODES, chars.wide, chars.wide_negated)
    pairs = [[part, boundary.copy()] for part in (word, other)]
    alternation = _Alt([pair if before else pair[::-1] for pair in pairs])
    if repeat is None:
        return [alternation]
    high = None if repeat.high is None else repeat.high - 1
    if high == 0:
        return [alternation]
    rest = _Repeat(chars, repeat.low - 1, high)
    return [rest, alternation] if before else [alternation, rest]


def _top_branches(core: _Alt) -> list[list[_Node]]:
    """The branches of the outermost alternation, looking through groups that wrap the whole pattern."""
    branches: list[list[_Node]] = []
    for branch in core.branches:
        if len(branch) == 1 and isinstance(branch[0], _Alt):
            branches.extend(_top_branches(branch[0]))
        else:
            branches.append(branch)
    return branches


# --- the pattern as a tree ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flags:
    caseless: bool
    dotall: bool
    multiline: bool


@dataclass(eq=False)
class _Chars:
    """One character out of a set: ASCII ``codes``, and non-ASCII ``wide`` ranges (``wide_negated``: all but those)."""

    codes: frozenset[int]
    wide: tuple[tuple[int, int], ...] = ()
    wide_negated: bool = False

    def groups(self) -> int:
        mask = OTHER if self.wide_negated or self.wide else 0
        if self.codes & _WORD_CODES:
            mask |= WORD
        if 10 in self.codes:
            mask |= NEWLINE
        if self.codes - _WORD_CODES - {10}:
            mask |= OTHER
        return mask

    @staticmethod
    def of(members: Iterable[int], wide: Iterable[tuple[int, int]] = ()) -> _Chars:
        members = set(members)
        listed = _ranges_union(_ranges(c for c in members if c >= 128), wide)
        return _Chars(frozenset(c for c in members if c < 128), listed)

    def negate(self) -> _Chars:
        return _Chars(_ASCII - self.codes, self.wide, not self.wide_negated)

    def union(self, other: _Chars) -> _Chars:
        if self.wide_negated and other.wide_negated:
            wide = _ranges_intersection(self.wide, other.wide)  # both list what they leave out
        elif self.wide_negated or other.wide_negated:
            left_out, added = (self.wide, other.wide) if self.wide_negated else (other.wide, self.wide)
            wide = _ranges_difference(left_out, added)
        else:
            wide = _ranges_union(self.wide, other.wide)
        return _Chars(self.codes | other.codes, wide, self.wide_negated or other.wide_negated)

    def contains(self, code: int) -> bool:
        if code < 128:
            return code in self.codes
        return _within(code, self.wide) != self.wide_negated

    def lower_closed(self) -> bool:
        """Whether each character and those with the same lower case are all in the set or all out of it: then the
        lower-cased field tells members apart exactly. Only cased characters can break it: those of ASCII and those
        the ranges list (every other group lies wholly in or out)."""
        preimages = _lower_preimages()
        for code in itertools.chain(range(65, 91), range(97, 123), _cased_within(self.wide)):
            lower = chr(code).lower()
            if len(lower) == 1:
                group = preimages.get(ord(lower), set()) | {ord(lower), code}
                if len({self.contains(member) for member in group}) > 1:
                    return False
        return True

    def lowered(self) -> _Chars:
        """The set a lower-cased field shows: ``c`` is in it when ``c`` or a letter whose lower case is ``c`` is in
        this set (the Kelvin sign's lower case is ``k``)."""
        return _lowered(self.codes, self.wide, self.wide_negated)


@functools.lru_cache(maxsize=4096)
def _lowered(codes: frozenset[int], wide: tuple[tuple[int, int], ...], wide_negated: bool) -> _Chars:
    preimages = _lower_preimages()
    ascii_lower = {ord(chr(c).lower()) for c in codes}
    if wide_negated:  # every non-ASCII but the ranges: a lower case stays out only with all its capitals
        let_in = [c for c in _cased_within(wide) if any(not _within(d, wide) for d in preimages.get(c, ()) if d > 127)]
        extra = {c for c in range(128) for d in preimages.get(c, ()) if d > 127 and not _within(d, wide)}
        kept_out = _without_capitals(_ranges_difference(wide, _ranges(let_in)))
        return _Chars(frozenset(codes | ascii_lower | extra), kept_out, wide_negated=True)
    images = {ord(lower) for c in _cased_within(wide) if len(lower := chr(c).lower()) == 1}
    extended = _without_capitals(_ranges_union(wide, _ranges(c for c in images if c > 127)))
    return _Chars(frozenset(codes | ascii_lower | {c for c in images if c < 128}), extended)


@functools.lru_cache(maxsize=4096)
def _caseless_literal(code: int) -> _Chars:
    """One character as RE2's case-insensitive mode reads it, on the lower-cased field (most atoms of a pattern)."""
    return _Chars.of(_case_orbit(code)).lowered()


def _without_capitals(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """``ranges`` without the capitals in them, which never reach a lower-cased field, where that keeps them short."""
    if _size(ranges) > _SMALL_SET:
        return ranges
    return _ranges_difference(ranges, _ranges(c for c in _cased_within(ranges) if chr(c).lower() != chr(c)))


@dataclass(eq=False)
class _Assert:
    kind: str  # "b", "B", "^" or "$"
    multiline: bool
    before: tuple[int, bool] = (0, False)  # groups that can precede, and whether the pattern's start can
    after: tuple[int, bool] = (0, False)
    static: bool | None = None  # True: always holds, False: never; None: decided by the padding (see _holds)

    def copy(self) -> _Assert:
        """The same assertion at another place (what stands beside it is worked out again)."""
        return _Assert(self.kind, self.multiline)


@dataclass(eq=False)
class _Repeat:
    node: _Node
    low: int
    high: int | None


@dataclass(eq=False)
class _Alt:
    branches: list[list[_Node]] = field(default_factory=list)


_Node = _Chars | _Assert | _Repeat | _Alt


class _Parser:
    """A recursive-descent parser for the RE2 syntax rules use."""

    def __init__(self, pattern: str, flags: _Flags) -> None:
        self.pattern = pattern
        self.index = 0
        self.notes: list[str] = []
        self.flags = flags

    def parse(self) -> _Alt:
        alt = self.alternation()
        if self.index < len(self.pattern):
            raise NotImplementedError(f"unbalanced ')' at {self.index} in {self.pattern!r}")
        return alt

    def peek(self, text: str) -> bool:
        return self.pattern.startswith(text, self.index)

    def take(self) -> str:
        if self.index >= len(self.pattern):
            raise NotImplementedError(f"the regex {self.pattern!r} ends inside an escape or a class")
        char = self.pattern[self.index]
        self.index += 1
        return char

    def alternation(self) -> _Alt:
        saved = self.flags
        alt = _Alt([[]])
        while self.index < len(self.pattern) and not self.peek(")"):
            if self.peek("|"):
                self.index += 1
                alt.branches.append([])
                continue
            node = self.atom()
            if node is not None:
                alt.branches[-1].append(self.quantified(node))
        self.flags = saved  # (?i) lasts to the end of its group
        return alt

    def quantified(self, node: _Node) -> _Node:
        while self.index < len(self.pattern) and self.pattern[self.index] in "*+?{":
            char = self.pattern[self.index]
            if char == "{":
                bounds = self.bounds()
                if bounds is None:
                    return node
                low, high = bounds
            else:
                self.index += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            if self.peek("?"):  # lazy: the same texts match
                self.index += 1
            node = _Repeat(node, low, high)
        return node

    def bounds(self) -> tuple[int, int | None] | None:
        end = self.pattern.find("}", self.index)
        inner = self.pattern[self.index + 1 : end] if end > 0 else ""
        low, comma, high = inner.partition(",")
        if not _is_number(low) or (high and not _is_number(high)):
            return None  # RE2 reads a '{' that starts no repetition as a literal
        self.index = end + 1
        return int(low), (int(high) if high else None) if comma else int(low)

    def atom(self) -> _Node | None:
        char = self.take()
        if char == "(":
            return self.group()
        if char == "[":
            return self.char_class()
        if char == "\\":
            return self.escape()
        if char in "^$":
            return _Assert(char, self.flags.multiline)
        if char == ".":
            return _Chars(_ASCII if self.flags.dotall else _ASCII - {10}, wide_negated=True)
        if char in "*+?" or (char == "{" and self.repetition_at(self.index - 1)):
            raise NotImplementedError(f"nothing to repeat at {self.index - 1} in {self.pattern!r}")
        return self.literal(ord(char))

    def repetition_at(self, index: int) -> bool:
        saved, self.index = self.index, index
        found = self.bounds() is not None
        self.index = saved
        return found

    def group(self) -> _Node | None:
        if not self.peek("?"):
            return self.close(self.alternation())
        self.index += 1
        if self.peek("P<") or self.peek("<"):
            self.index = self.pattern.index(">", self.index) + 1
            return self.close(self.alternation())
        end = min(i for i in (self.pattern.find(":", self.index), self.pattern.find(")", self.index)) if i >= 0)
        spec, scoped = self.pattern[self.index : end], self.pattern[end] == ":"
        self.index = end + 1
        flags = self.apply_flags(spec)
        if not scoped:
            self.flags = flags
            return None
        saved, self.flags = self.flags, flags
        alt = self.alternation()
        self.flags = saved
        return self.close(alt)

    def close(self, alt: _Alt) -> _Alt:
        if not self.peek(")"):
            raise NotImplementedError(f"unclosed group in {self.pattern!r}")
        self.index += 1
        return alt

    def apply_flags(self, spec: str) -> _Flags:
        on, _, off = spec.partition("-")
        values = {"caseless": self.flags.caseless, "dotall": self.flags.dotall, "multiline": self.flags.multiline}
        for letters, state in ((on, True), (off, False)):
            for letter in letters:
                name = {"i": "caseless", "s": "dotall", "m": "multiline", "U": None}.get(letter, "?")
                if name == "?":
                    raise NotImplementedError(f"flag {letter!r} in {self.pattern!r}")
                if name:
                    values[name] = state
        return _Flags(**values)

    def escape(self) -> _Node:
        char = self.take()
        if char.lower() in _PERL_CLASSES:
            return self.chars(set(), [], [self.perl(char)])
        if char in "bB":
            return _Assert(char, self.flags.multiline)
        if char in "Az":
            return _Assert("^" if char == "A" else "$", multiline=False)
        return self.literal(self.escaped_code(char))

    def escaped_code(self, char: str) -> int:
        if char in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[char])
        if char == "x":
            if self.peek("{"):
                end = self.pattern.index("}", self.index)
                digits, self.index = self.pattern[self.index + 1 : end], end + 1
            else:
                digits = self.take() + self.take()
            return int(digits, 16)
        if char.isalnum():
            raise NotImplementedError(f"the escape \\{char} in {self.pattern!r} has no Lucene equivalent")
        return ord(char)

    def chars(
        self,
        codes: set[int],
        ranges: list[tuple[int, int]],
        pieces: Iterable[_Chars] = (),
        negated: bool = False,
    ) -> _Chars:
        """What the lower-cased field holds where RE2 would match one of the written members (``codes``,
        ``ranges``) or Perl classes (``pieces``, see :meth:`perl`), negated or not: folded for case first when
        caseless (as RE2 does), lower-cased after (as the field is); a cased letter notes the approximation."""
        ascii_ranges = [(low, min(high, 127)) for low, high in ranges if low < 128]
        wide = _ranges_union((), [(max(low, 128), high) for low, high in ranges if high >= 128])
        members = self.fold(codes | _expand(ascii_ranges) | set(_cased_within(wide)))
        written = _Chars.of(members, wide)
        for piece in pieces:
            written = written.union(piece)
        if negated:
            written = written.negate()
        if not self.flags.caseless and not written.lower_closed():
            self.notes.append("a case-sensitive part is matched without case (the field is lower-cased)")
        return written.lowered()

    def literal(self, code: int) -> _Chars:
        return _caseless_literal(code) if self.flags.caseless else self.chars({code}, [])

    def fold(self, members: set[int]) -> set[int]:
        """``members`` and, when caseless, every character RE2 matches with one of them."""
        return {other for c in members for other in _case_orbit(c)} if self.flags.caseless else members

    def perl(self, letter: str) -> _Chars:
        """``\\w``, ``\\d``, ``\\s`` (folded when caseless: RE2's ``(?i)\\w`` takes ``ſ`` and the Kelvin sign)
        and their capital forms, the complements."""
        chars = _Chars.of(self.fold(set(_PERL_CLASSES[letter.lower()])))
        return chars.negate() if letter.isupper() else chars

    def char_class(self) -> _Chars:
        negated = self.peek("^")
        self.index += negated
        codes: set[int] = set()
        ranges: list[tuple[int, int]] = []
        pieces: list[_Chars] = []
        first = True
        while first or not self.peek("]"):
            first = False
            if self.peek("[:"):
                raise NotImplementedError(f"POSIX classes in {self.pattern!r}")
            low = self.class_member()
            if isinstance(low, _Chars):
                pieces.append(low)
            elif self.peek("-") and not self.peek("-]"):
                self.index += 1
                high = self.class_member()
                if not isinstance(high, int) or high < low:
                    raise NotImplementedError(f"a bad range in a class in {self.pattern!r}")
                ranges.append((low, high))
            else:
                codes.add(low)
        self.index += 1
        return self.chars(codes, ranges, pieces, negated)

    def class_member(self) -> int | _Chars:
        """One member's code, or a Perl class (``\\w``, ``\\S``)."""
        char = self.take()
        if char != "\\":
            return ord(char)
        char = self.take()
        if char.lower() in _PERL_CLASSES:
            return self.perl(char)
        return self.escaped_code(char)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # RE2 reads "{١}" as text


def _expand(ranges: Iterable[tuple[int, int]]) -> set[int]:
    return {code for low, high in ranges for code in range(low, high + 1)}


_SMALL_SET = 4096  # a set of non-ASCII characters this small is written without its capitals


def _ranges_union(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for low, high in sorted((*a, *b)):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return tuple((low, high) for low, high in merged)


def _ranges_intersection(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    return tuple((max(l1, l2), min(h1, h2)) for l1, h1 in a for l2, h2 in b if max(l1, l2) <= min(h1, h2))


def _ranges_difference(a: tuple[tuple[int, int], ...], b: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    pieces = list(a)
    for low, high in b:
        pieces = [
            part
            for start, end in pieces
            for part in ((start, min(end, low - 1)), (max(start, high + 1), end))
            if part[0] <= part[1]
        ]
    return _ranges_union(pieces, ())


def _size(ranges: Iterable[tuple[int, int]]) -> int:
    return sum(high - low + 1 for low, high in ranges)


def _within(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    index = bisect.bisect_right(ranges, (code, 0x110000)) - 1
    return index >= 0 and ranges[index][0] <= code <= ranges[index][1]


def _cased_within(ranges: Iterable[tuple[int, int]]) -> list[int]:
    """The cased characters in ``ranges``: the only ones folding or lower-casing can change."""
    cased = _cased()
    return [
        cased[index]
        for low, high in ranges
        for index in range(bisect.bisect_left(cased, low), bisect.bisect_right(cased, high))
    ]


@functools.cache
def _cased() -> tuple[int, ...]:
    """Every character some case mapping or fold relates to another one, sorted."""
    related = {code for group in _lower_preimages().values() for code in group}
    related |= {code for group in _fold_classes().values() if len(group) > 1 for code in group}
    return tuple(sorted(related))


def _ranges(codes: Iterable[int]) -> tuple[tuple[int, int], ...]:
    runs: list[list[int]] = []
    for code in sorted(set(codes)):
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return tuple((low, high) for low, high in runs)


@functools.cache
def _case_orbit(code: int) -> frozenset[int]:
    """The characters RE2's case-insensitive matching takes for ``code`` (``s``: ``S``, ``ſ``; ``k``: ``K``,
    U+212A; ``ß``: ``ẞ``): the candidates Python's case mappings relate to it, kept where RE2 itself agrees."""
    char = chr(code)
    candidates = {code} | {ord(v) for v in (char.lower(), char.upper()) if len(v) == 1}
    if len(folded := char.casefold()) == 1:
        candidates |= _fold_classes().get(folded, set())
    for member in list(candidates):
        candidates |= _lower_preimages().get(ord(lower), set()) if len(lower := chr(member).lower()) == 1 else set()
    matcher = re2.compile(f"(?i)\\x{{{code:x}}}")
    return frozenset(c for c in candidates if c == code or matcher.fullmatch(chr(c)))


@functools.cache
def _fold_classes() -> dict[str, set[int]]:
    classes: dict[str, set[int]] = {}
    for code in range(0x20000):
        folded = chr(code).casefold()
        if len(folded) == 1:
            classes.setdefault(folded, set()).add(code)
    return classes


@functools.cache
def _lower_preimages() -> dict[int, set[int]]:
    """For each character that is some other character's lower case, those other characters (``k``: ``K``, U+212A)."""
    preimages: dict[int, set[int]] = {}
    for code in range(0x20000):
        lower = chr(code).lower()
        if len(lower) == 1 and ord(lower) != code:
            preimages.setdefault(ord(lower), {ord(lower)}).add(code)
    return preimages


# --- which characters can stand on each side of an assertion -----------------------------------------------------


class _Flow:
    """Forward and backward passes that record, for each assertion, what can precede and follow it."""

    def __init__(self, core: _Alt) -> None:
        self.core = core
        self.asserts: list[_Assert] = []

    def resolve(self, notes: list[str]) -> None:
        self.forward(self.core, (0, True))
        self.backward(self.core, (0, True))
        for node in dict.fromkeys(self.asserts):
            outcomes = {_holds(node, start, end) for start, end in itertools.product(_SIDES, repeat=2)}
            if None in outcomes:  # written as if it held: the query finds more, never less
                notes.append(f"a {_ASSERT_NAMES[node.kind]} with both kinds of character on a side is left out")
            if len(outcomes) == 1:
                node.static = outcomes.pop() is not False

    def forward(self, node: _Node, before: tuple[int, bool]) -> tuple[int, bool]:
        if isinstance(node, _Chars):
            return node.groups(), False
        if isinstance(node, _Assert):
            node.before = _union(node.before, before)
            self.asserts.append(node)
            return before
        if isinstance(node, _Alt):
            out = (0, False)
            for branch in node.branches:
                state = before
                for item in branch:
                    state = self.forward(item, state)
                out = _union(out, state)
            return out
        return self.repeat(node, before, self.forward)

    def backward(self, node: _Node, after: tuple[int, bool]) -> tuple[int, bool]:
        if isinstance(node, _Chars):
            return node.groups(), False
        if isinstance(node, _Assert):
            node.after = _union(node.after, after)
            return after
        if isinstance(node, _Alt):
            out = (0, False)
            for branch in node.branches:
                state = after
                for item in reversed(branch):
                    state = self.backward(item, state)
                out = _union(out, state)
            return out
        return self.repeat(node, after, self.backward)

    @staticmethod
    def repeat(node: _Repeat, side: tuple[int, bool], step) -> tuple[int, bool]:
        if node.high == 0:
            return side
        out = step(node.node, side)
        if node.high != 1:  # one iteration stands next to the one before
            while True:
                grown = _union(out, step(node.node, _union(side, out)))
                if grown == out:
                    break
                out = grown
        return _union(out, side) if node.low == 0 else out


_ASSERT_NAMES = {"b": "word boundary", "B": "non-boundary", "^": "start anchor", "$": "end anchor"}


def _union(a: tuple[int, bool], b: tuple[int, bool]) -> tuple[int, bool]:
    return a[0] | b[0], a[1] or b[1]


def _groups(mask: int) -> list[int]:
    return [group for group in (WORD, NEWLINE, OTHER, EDGE) if mask & group]


def _holds(node: _Assert, start: int, end: int) -> bool | None:
    """Whether the assertion holds for every pair of neighbours, given what the padding ends and starts with."""
    befores = _groups(node.before[0] | (start if node.before[1] else 0))
    afters = _groups(node.after[0] | (end if node.after[1] else 0))
    results = {_test(node, b, a) for b in befores for a in afters}
    return results.pop() if len(results) == 1 else (True if not results else None)


def _test(node: _Assert, before: int, after: int) -> bool:
    if node.kind in "bB":
        return ((before == WORD) != (after == WORD)) == (node.kind == "b")
    lines = (EDGE, NEWLINE) if node.multiline else (EDGE,)
    return (before if node.kind == "^" else after) in lines


# --- writing Lucene ----------------------------------------------------------------------------------------------


class _Writer:
    """Lucene text of the tree's nodes for each kind of padding around the match; a node without an assertion that
    depends on the padding is written once."""

    def __init__(self) -> None:
        self._fixed: dict[int, str | None] = {}
        self._free: dict[int, bool] = {}

    def emit(self, node: _Node, start: int, end: int) -> str | None:
        """The text of ``node`` when the padding ends with ``start`` and begins with ``end``; None: cannot match."""
        if not self.free(node):
            return self._emit(node, start, end)
        if id(node) not in self._fixed:
            self._fixed[id(node)] = self._emit(node, start, end)
        return self._fixed[id(node)]

    def free(self, node: _Node) -> bool:
        """Whether ``node`` reads the same whatever the padding."""
        if id(node) not in self._free:
            if isinstance(node, _Assert):
                self._free[id(node)] = node.static is not None
            elif isinstance(node, _Repeat):
                self._free[id(node)] = self.free(node.node)
            elif isinstance(node, _Alt):
                self._free[id(node)] = all(self.free(item) for branch in node.branches for item in branch)
            else:
                self._free[id(node)] = True
        return self._free[id(node)]

    def _emit(self, node: _Node, start: int, end: int) -> str | None:
        if isinstance(node, _Chars):
            return _chars_text(node.codes, node.wide, node.wide_negated)
        if isinstance(node, _Assert):
            holds = node.static if node.static is not None else _holds(node, start, end)
            return None if holds is False else ""
        if isinstance(node, _Repeat):
            inner = self.emit(node.node, start, end) if node.high != 0 else ""
            if inner is None:
                return "" if node.low == 0 else None
            return f"{_unit(inner)}{_quantifier(node.low, node.high)}" if inner else ""
        branches = []
        for branch in node.branches:
            parts = [self.emit(item, start, end) for item in branch]
            if None not in parts:
                branches.append(_joined(branch, parts))
        if not branches:
            return None
        unique = list(dict.fromkeys(branches))
        return "|".join(branch or "()" for branch in unique)


def _joined(items: list[_Node], texts: list[str | None]) -> str:
    """The texts of a sequence of ``items``, each group in parentheses where it has branches."""
    return "".join(_grouped(item, text) for item, text in zip(items, texts, strict=True))


def _grouped(node: _Node, text: str | None) -> str:
    """A group's text, in parentheses where it has branches."""
    return f"({text})" if isinstance(node, _Alt) and _has_branches(text or "") else text or ""


def _has_branches(text: str) -> bool:
    """Whether ``text`` has a ``|`` outside parentheses and classes."""
    return any(char == "|" and depth == 0 for _, char, depth in _structure(text))


def _structure(text: str) -> Iterator[tuple[int, str, int]]:
    """``(index, character, depth before it)`` of each character outside escapes and classes."""
    depth, index, in_class = 0, 0, False
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        else:
            yield index, char, depth
            depth += {"(": 1, ")": -1}.get(char, 0)
        index += 1


def _unit(text: str) -> str:
    """``text`` as one thing a quantifier can follow."""
    if len(text) == 1 or (len(text) == 2 and text[0] == "\\") or _one_class(text) or _one_group(text):
        return text
    return f"({text})"


def _one_class(text: str) -> bool:
    return text.startswith("[") and text.endswith("]") and _closing_bracket(text) == len(text) - 1


def _closing_bracket(text: str) -> int:
    index = 2 if text.startswith("[^") else 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == "]":
            return index
        index += 1
    return -1


def _one_group(text: str) -> bool:
    """Whether ``text`` is one group: its first parenthesis closes at its end."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    return all(not (char == ")" and depth == 1) or index == len(text) - 1 for index, char, depth in _structure(text))


def _quantifier(low: int, high: int | None) -> str:
    if (low, high) == (0, None):
        return "*"
    if (low, high) == (1, None):
        return "+"
    if (low, high) == (0, 1):
        return "?"
    if high is None:
        return f"{{{low},}}"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


@functools.lru_cache(maxsize=4096)
def _chars_text(codes: frozenset[int], wide: tuple[tuple[int, int], ...], wide_negated: bool) -> str | None:
    """A set on a lower-cased field: upper-case ASCII never occurs there, so both forms leave it out."""
    node = _Chars(codes, wide, wide_negated)
    lower = node.codes & _LOWER_ASCII
    if not node.wide_negated and not node.wide:
        if lower == _WORD_CODES & _LOWER_ASCII:
            return "[a-z0-9_]"
        if lower == _SPACE_CODES:
            return "\\s"
        if len(lower) == 1:
            return _escape(chr(min(lower)))
        return f"[{_class_body(sorted(lower), ())}]" if lower else None
    if not node.wide_negated:
        if not lower and len(node.wide) == 1 and node.wide[0][0] == node.wide[0][1]:
            return _escape(chr(node.wide[0][0]))
        return f"[{_class_body(sorted(lower), node.wide)}]"
    excluded = sorted(_LOWER_ASCII - lower)
    if not excluded and not node.wide:
        return "."
    if excluded == sorted(_WORD_CODES & _LOWER_ASCII) and not node.wide:
        return "[^a-z0-9_]"
    return f"[^{_class_body(excluded, node.wide, negated=True)}]"


def _class_body(codes: Iterable[int], ranges: Iterable[tuple[int, int]], *, negated: bool = False) -> str:
    members = set(codes)
    # Lucene's \s also takes \v: fine where it adds a member (see the module docstring), not where it takes one away
    spaces = "\\s" if members >= _SPACE_CODES and not negated else ""
    if spaces:
        members -= _SPACE_CODES
    word = _WORD_CODES & _LOWER_ASCII
    if members >= word:  # written as \w is, first
        spaces, members = f"a-z0-9_{spaces}", members - word
    runs: list[list[int]] = []
    for code in sorted(members):
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    runs.extend([lo, hi] for lo, hi in ranges)
    parts = [spaces]
    for lo, hi in runs:
        if hi - lo >= 2:
            parts.append(f"{_class_escape(chr(lo))}-{_class_escape(chr(hi))}")
        else:
            parts.extend(_class_escape(chr(code)) for code in range(lo, hi + 1))
    return "".join(parts)


def _escape(char: str) -> str:
    return f"\\{char}" if char in _LUCENE_SPECIAL else char


def _class_escape(char: str) -> str:
    return f"\\{char}" if char in "\\]-^[<>" else char


def _padding(sides: frozenset[int], *, before: bool) -> str:
    """What may come before the match (``before``) or after it: nothing (``EDGE``), or any text that ends (starts)
    with one of the other groups."""
    if sides == frozenset(_SIDES):
        return ".{0,}"
    groups = sum(side for side in sides if side != EDGE)
    if not groups:
        return ""
    if groups == WORD | NEWLINE | OTHER:
        padding = ".{1,}"
    else:
        padding = f".{{0,}}{_GROUP_CLASS[groups]}" if before else f"{_GROUP_CLASS[groups]}.{{0,}}"
    return f"({padding})?" if EDGE in sides else padding


def _rectangles(pairs: set[tuple[int, int]]) -> list[tuple[frozenset[int], frozenset[int]]]:
    """Cover (start, end) pairs with products of a set of starts and a set of ends."""
    ends_by_start: dict[int, frozenset[int]] = {}
    for start, end in pairs:
        ends_by_start[start] = ends_by_start.get(start, frozenset()) | {end}
    by_ends: dict[frozenset[int], set[int]] = {}
    for start, ends in ends_by_start.items():
        by_ends.setdefault(ends, set()).add(start)
    return [(frozenset(starts), ends) for ends, starts in by_ends.items()]
