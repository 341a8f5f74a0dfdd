"""Bundled sample traffic (one JSONL file per source format, plus ``labels.json``), written by
``python -m app.traffic.samples``. A package so the files ship with the wheel."""
