"""bench/bench_scaling.py: the cost-vs-prompt-length figures time the whole pipeline on texts it has not seen."""

from __future__ import annotations

from bench.bench_scaling import LENGTHS, WARM_UP_TEXTS, by_length, synthetic_rule
from detectors.pipeline import Pipeline
from detectors.redact import Redactor
from detectors.signatures import RuleSet, SignatureDetector


def test_the_pipeline_is_timed_on_texts_its_signature_cache_has_not_seen() -> None:
    signatures = SignatureDetector(RuleSet.from_texts([synthetic_rule(0)]), cache_size=1_000)
    pipeline = Pipeline([signatures], Redactor(b"k"))
    texts = [f"summarise report number {index} for the shipping team" for index in range(4)]

    figures = by_length(texts, len(texts), pipeline)

    assert sorted(figures, key=int) == [str(length) for length in LENGTHS]
    assert all(part["us_per_event_cpu"] >= 0 for row in figures.values() for part in row.values())
    assert signatures.cache is not None
    warm_up = min(len(texts), WARM_UP_TEXTS)
    assert signatures.cache.misses == warm_up + 2 * len(texts) * len(LENGTHS)  # every text scanned by each pass
    assert signatures.cache.hits == 0  # neither pass reused the other's verdicts
