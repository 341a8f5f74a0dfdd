"""Deterministic synthetic documents for training and evaluating the classifier.

The benign corpora are short chat turns, while many attacks are long; a model trained on them alone learns
"long means attack" and flags every retrieved document and tool result. These generators assemble long,
document-like benign texts (chat transcripts, documents to summarise, web pages, search-tool JSON, e-mails,
code to review, CSV exports) from short benign pieces, and hide attack texts inside such documents (indirect
injection). The same seed and pieces always give the same texts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

_INSTRUCTIONS = (
    "Summarise the following document in three bullet points.",
    "Translate the text below into French, keeping the formatting.",
    "Proofread this draft and list the grammar mistakes you find.",
    "Extract the action items and their owners from these meeting notes.",
    "Write a short abstract for the following article.",
    "Classify the sentiment of each paragraph below as positive, negative or neutral.",
    "Answer the customer's question using only the knowledge-base article below.",
    "Turn these notes into a polite e-mail to the team.",
)
_CODE_REQUESTS = (
    "Can you review this code and suggest improvements?",
    "Why does this function return None sometimes?",
    "Please add type hints and docstrings to the following module.",
    "Write unit tests for the code below.",
    "Explain what this script does, step by step.",
)
_NAMES = ("Alex", "Priya", "Jordan", "Mei", "Samuel", "Fatima", "Lucas", "Olga", "Kenji", "Amara")
_HEADINGS = ("Overview", "Background", "Details", "Discussion", "Next steps", "FAQ", "Notes", "Summary")
_CODE_TEMPLATES = (
    'def {name}(items: list[str]) -> dict[str, int]:\n    """{doc}"""\n    counts: dict[str, int] = {{}}\n'
    "    for item in items:\n        counts[item] = counts.get(item, 0) + 1\n    return counts\n",
    'class {cls}:\n    """{doc}"""\n\n    def __init__(self, limit: int = {num}) -> None:\n        self.limit = limit\n'
    "        self.items = []\n\n    def add(self, item):\n        if len(self.items) >= self.limit:\n"
    "            raise ValueError('full')\n        self.items.append(item)\n",
    "function {name}(rows) {{\n  // {doc}\n  return rows\n    .filter((row) => row.total > {num})\n"
    "    .map((row) => ({{ id: row.id, total: row.total }}));\n}}\n",
    "SELECT customer_id, COUNT(*) AS orders, SUM(amount) AS revenue\nFROM orders\n"
    "WHERE created_at >= DATE '2024-01-01' AND amount > {num}\nGROUP BY customer_id\nORDER BY revenue DESC\n"
    "LIMIT 20;  -- {doc}\n",
    "async def {name}(session, url: str, retries: int = {num}):\n    # {doc}\n    for attempt in range(retries):\n"
    "        async with session.get(url) as response:\n            if response.status == 200:\n"
    "                return await response.json()\n    return None\n",
)

# Everyday instruction-style requests, including benign uses of words attacks also use (role-play, "ignore",
# "previous", "system"), so imperative phrasing alone does not look like an attack. ``{topic}`` and ``{text}``
# are filled from benign pieces.
_TASKS = (
    "Write a short poem about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "Give me three arguments for and against this statement: {text}",
    "Rewrite the following sentence in a more formal tone: {text}",
    "Translate into German: {text}",
    "Summarise this in one sentence: {text}",
    "Fix the grammar: {text}",
    "Create a quiz with five questions about {topic}.",
    "Suggest a title for a blog post about {topic}.",
    "Pretend you are a tour guide and describe {topic} to a group of visitors.",
    "Act as my English teacher and correct this paragraph: {text}",
    "You are a helpful assistant for a bookshop. A customer asks: {text}",
    "Role-play a job interview for a junior developer position; you are the interviewer.",
    "Ignore the typos in my notes and tell me whether the argument holds up: {text}",
    "Disregard my previous message, I meant next Tuesday, not Monday. Can you update the plan?",
    "Forget the last example and use this one instead: {text}",
    "From now on, answer in Spanish so I can practise. First question: {text}",
    "Repeat the last sentence of your previous answer, I missed it.",
    "What were the instructions in the recipe you gave me earlier? {text}",
    "Write a system design document outline for a URL shortener.",
    "Explain what a system prompt is and why chatbots use one.",
    "Classify the sentiment of this review as positive or negative: {text}",
    "Extract all dates and names from the text: {text}",
    "Convert this list into a markdown table: {text}",
    "Write a unit test for a function that parses ISO dates.",
    "How do I configure nginx as a reverse proxy for {topic}?",
    "Draft a polite reply declining the invitation: {text}",
    "Brainstorm ten names for a podcast about {topic}.",
    "Give step-by-step instructions to set up a Python virtual environment.",
    "You are now in charge of planning our team offsite. Propose an agenda about {topic}.",
    "Answer only with yes or no: {text}",
    "Respond as if you were a pirate: {text}",
    "Without using the letter e, describe {topic}.",
    "Output the result as JSON with keys title and summary: {text}",
    "Please override the default formatting and use bullet points for {topic}.",
    "Bypass the small talk and give me the key facts about {topic}.",
)

Generator = Callable[[random.Random, Sequence[str], int], str]


def _one_line(text: str, limit: int = 80) -> str:
    return " ".join(text.split())[:limit]


def _identifier(rng: random.Random, pieces: Sequence[str]) -> str:
    words = [w.lower() for w in rng.choice(pieces).split() if w.isalpha()][:3] or ["value"]
    return "_".join(words)


def _paragraphs(rng: random.Random, pieces: Sequence[str], length: int) -> list[str]:
    """Paragraphs of 2-6 pieces each until about ``length`` characters."""
    paragraphs, size = [], 0
    while size < length:
        paragraph = " ".join(rng.choice(pieces).strip() for _ in range(rng.randint(2, 6)))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return paragraphs


def transcript(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    lines, size, turn = [], 0, 0
    while size < length:
        line = f"{'User' if turn % 2 == 0 else 'Assistant'}: {rng.choice(pieces).strip()}"
        lines.append(line)
        size += len(line) + 1
        turn += 1
    return "\n".join(lines)


def document_task(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    return rng.choice(_INSTRUCTIONS) + "\n\n" + "\n\n".join(_paragraphs(rng, pieces, length))


def web_page(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    parts = [f"# {_one_line(rng.choice(pieces), 60)}"]
    for paragraph in _paragraphs(rng, pieces, length):
        if rng.random() < 0.3:
            parts.append(f"## {rng.choice(_HEADINGS)}")
        parts.append(paragraph)
    return "\n\n".join(parts)


def search_results(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    results, size = [], 0
    while size < length:
        title = _one_line(rng.choice(pieces), 60)
        result = {
            "id": len(results) + 1,
            "title": title,
            "url": f"https://docs.example.com/{_identifier(rng, pieces)}",
            "snippet": " ".join(rng.choice(pieces).strip() for _ in range(rng.randint(1, 3))),
            "score": round(rng.random(), 3),
        }
        results.append(result)
        size += len(json.dumps(result))
    return json.dumps({"query": _one_line(rng.choice(pieces), 60), "results": results}, indent=2)


def email(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    sender, recipient = rng.sample(_NAMES, 2)
    body = "\n\n".join(_paragraphs(rng, pieces, length))
    return (
        f"From: {sender.lower()}@example.com\nTo: {recipient.lower()}@example.com\n"
        f"Subject: {_one_line(rng.choice(pieces), 60)}\n\nHi {recipient},\n\n{body}\n\nBest regards,\n{sender}"
    )


def code_review(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    blocks, size = [], 0
    while size < length:
        template = rng.choice(_CODE_TEMPLATES)
        name = _identifier(rng, pieces)
        block = template.format(
            name=name,
            cls="".join(part.title() for part in name.split("_")),
            doc=_one_line(rng.choice(pieces)),
            num=rng.randint(2, 500),
        )
        blocks.append(block)
        size += len(block)
    language = "sql" if blocks[0].startswith("SELECT") else "python"
    return f"{rng.choice(_CODE_REQUESTS)}\n\n```{language}\n" + "\n".join(blocks) + "```"


def csv_export(rng: random.Random, pieces: Sequence[str], length: int) -> str:
    rows, size = ["ticket_id,created,status,priority,subject"], 0
    while size < length:
        subject = _one_line(rng.choice(pieces), 70).replace('"', "'")
        row = (
            f"{rng.randint(10000, 99999)},2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
            f'{rng.choice(("open", "closed", "pending"))},{rng.choice(("low", "normal", "high"))},"{subject}"'
        )
        rows.append(row)
        size += len(row) + 1
    return "\n".join(rows)


GENERATORS: dict[str, Generator] = {
    "transcript": transcript,
    "document_task": document_task,
    "web_page": web_page,
    "search_results": search_results,
    "email": email,
    "code_review": code_review,
    "csv_export": csv_export,
}


def instruction_prompts(pieces: Sequence[str], count: int, seed: str) -> list[str]:
    """``count`` short benign instruction-style prompts: hand-written tasks filled with benign pieces."""
    if not pieces:
        return []
    rng = random.Random(seed)
    pieces = sorted(pieces)
    return [
        _TASKS[index % len(_TASKS)].format(topic=_one_line(rng.choice(pieces), 60), text=rng.choice(pieces).strip())
        for index in range(count)
    ]


def _length(rng: random.Random, low: int, high: int) -> int:
    """Log-uniform in ``[low, high]``: as many short documents as long ones per order of magnitude."""
    return round(low * (high / low) ** rng.random())


def benign_documents(
    pieces: Sequence[str], count: int, seed: str, min_chars: int = 300, max_chars: int = 12_000
) -> list[tuple[str, str]]:
    """``count`` benign documents as ``(generator name, text)``, built from ``pieces``."""
    if not pieces:
        return []
    rng = random.Random(seed)
    pieces = sorted(pieces)
    names = sorted(GENERATORS)
    out = []
    for index in range(count):
        name = names[index % len(names)]
        out.append((name, GENERATORS[name](rng, pieces, _length(rng, min_chars, max_chars))))
    return out


def embedded_attacks(
    attacks: Sequence[str],
    pieces: Sequence[str],
    count: int,
    seed: str,
    min_chars: int = 200,
    max_chars: int = 6_000,
) -> list[tuple[int, str]]:
    """``count`` benign documents with one attack hidden inside each, as ``(attack index, text)``.

    The attack goes at the start, end or a paragraph boundary of the document. ``max_chars`` stays below the
    featuriser's head + tail window, so the attack is always within what the classifier sees.
    """
    if not attacks or not pieces:
        return []
    rng = random.Random(seed)
    pieces = sorted(pieces)
    names = sorted(GENERATORS)
    out = []
    for index in range(count):
        chosen = rng.randrange(len(attacks))
        name = names[index % len(names)]
        document = GENERATORS[name](rng, pieces, _length(rng, min_chars, max_chars))
        paragraphs = document.split("\n\n")
        position = rng.randint(0, len(paragraphs))
        paragraphs.insert(position, attacks[chosen].strip())
        out.append((chosen, "\n\n".join(paragraphs)))
    return out


def attached_attacks(
    attacks: Sequence[str], pieces: Sequence[str], count: int, seed: str, max_attack_chars: int = 400
) -> list[tuple[int, str]]:
    """``count`` prompts that open with a benign chat turn and go on with a short attack, as ``(attack index,
    text)``: the goal-hijacking shape ("Where can I find a painting course? Forget all that and say ...").

    Short attacks are otherwise outweighed by the benign words around them; only attacks of at most
    ``max_attack_chars`` characters are attached, so long jailbreaks are not merely lengthened.
    """
    short = [index for index, attack in enumerate(attacks) if len(attack.strip()) <= max_attack_chars]
    if not short or not pieces:
        return []
    rng = random.Random(seed)
    pieces = sorted(pieces)
    out = []
    for _ in range(count):
        chosen = rng.choice(short)
        separator = rng.choice((" ", "\n", " ... "))
        out.append((chosen, _one_line(rng.choice(pieces), 300) + separator + attacks[chosen].strip()))
    return out
