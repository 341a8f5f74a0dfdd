"""``abusewatch worker`` with one injected bug: the first Elasticsearch write that holds enriched events raises, as
an unexpected error would (``python -m tests.integration.faulty_worker``, same environment as the real worker).
``tests/integration/test_stream.py`` uses it to show that such a batch is redelivered, not lost."""

from __future__ import annotations

import os
from typing import Any

from app.cli import cli
from app.sinks.elasticsearch import ElasticsearchSink

_write = ElasticsearchSink.write
_events_index = os.environ["ABW_ELASTICSEARCH__EVENTS_INDEX"]
_failures: list[str] = []  # the one failure injected


async def _write_failing_once(self: ElasticsearchSink, documents: Any, *args: Any, **kwargs: Any) -> Any:
    if not _failures and any(document.index == _events_index for document in documents):
        _failures.append("injected")
        raise RuntimeError("injected: a bug in the middle of a detect batch")
    return await _write(self, documents, *args, **kwargs)


if __name__ == "__main__":
    ElasticsearchSink.write = _write_failing_once  # type: ignore[method-assign]
    cli(["worker"])
