"""Runs LLM Guard's offline input scanners over a texts file, in the peer's own virtual environment.

``python run_llm_guard.py TEXTS.json PATTERNS.json`` prints one JSON object: per scanner, the texts scanned, CPU
and wall seconds and how many texts it flagged. Only scanners that need no model download are used: Regex (with
the patterns of our built-in rule pack), BanSubstrings (with the pack's literals), Secrets and InvisibleText.
Standard library + llm_guard only: this file is run by the peer's interpreter, not the project's.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as texts_file, open(sys.argv[2], encoding="utf-8") as patterns_file:
        texts, patterns = json.load(texts_file), json.load(patterns_file)
    budget = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    from importlib.metadata import version

    from llm_guard.input_scanners import BanSubstrings, InvisibleText, Regex, Secrets
    from llm_guard.input_scanners.ban_substrings import MatchType as SubstringMatch
    from llm_guard.input_scanners.regex import MatchType as RegexMatch

    scanners = {
        "Regex": Regex(patterns=patterns["regexes"], is_blocked=True, match_type=RegexMatch.SEARCH, redact=False),
        "BanSubstrings": BanSubstrings(
            substrings=patterns["literals"], match_type=SubstringMatch.STR, case_sensitive=False, redact=False
        ),
        "Secrets": Secrets(),
        "InvisibleText": InvisibleText(),
    }
    report = {"llm_guard_version": version("llm-guard"), "scanners": {}}
    for name, scanner in scanners.items():
        flagged = scanned = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for text in texts:
            _, valid, _ = scanner.scan(text)
            flagged += not valid
            scanned += 1
            if time.perf_counter() - wall > budget:
                break
        report["scanners"][name] = {
            "texts": scanned,
            "flagged": flagged,
            "seconds_wall": time.perf_counter() - wall,
            "seconds_cpu": time.process_time() - cpu,
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
