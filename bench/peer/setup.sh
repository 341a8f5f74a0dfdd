#!/usr/bin/env bash
# Builds the peer's own virtual environment for `python -m bench --only peer`: LLM Guard, installed from PyPI
# with its full dependency set, in .cache/bench/peer-venv (kept out of the project's venv: it pins transformers,
# regex and faker versions the project does not want, and pulls torch).
#
# What the comparison uses needs no model download: the rule-based input scanners Regex, Secrets, InvisibleText
# and BanSubstrings. They still need torch and transformers importable, because llm_guard.input_scanners imports
# every scanner module (PromptInjection, Anonymize ...) at package import time; --no-deps plus a few light
# packages was tried and stops at `import torch` (see docs/performance.md).
#
# Usage: bench/peer/setup.sh [VENV_DIR]   (idempotent: a venv whose scanners import is reused)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${1:-$ROOT/.cache/bench/peer-venv}
PYTHON=${PYTHON:-python3}
CHECK='from llm_guard.input_scanners import BanSubstrings, InvisibleText, Regex, Secrets'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "peer venv ready: $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
started=$(date +%s)
"$VENV/bin/pip" install --quiet llm-guard==0.3.16
"$VENV/bin/python" -c "$CHECK"
echo "peer venv ready: $VENV ($(du -sh "$VENV" | cut -f1), installed in $(( $(date +%s) - started )) s)"
