"""Prompt-cache reads are kept apart on the event (``Event.cache_read_tokens``), in every format.

``Event.input_tokens`` counts every input token the provider processed, cache reads included (see
tests/test_normalise_prompt_cache.py). A cache read costs about a tenth of an input token, so a denial-of-wallet rule
that weighs tokens by price needs the reads apart: a coding agent re-reading a 100,000-token cached context ten times
in a window is not a stolen key writing a fresh 100,000-token cache entry ten times. ``cache_read_tokens`` is the
share of ``input_tokens`` read from the cache, at most ``input_tokens`` (a log that says more is clipped), ``None``
when the record does not say. It is indexed as ``gen_ai.usage.cache_read.input_tokens`` (the GenAI semantic
conventions' name), and an event without it keeps the document id it had before the field existed.

Fields: Bedrock invocation log ``input.cacheReadInputTokenCount``, Anthropic ``usage.cache_read_input_tokens``,
Converse ``usage.cacheReadInputTokens``, OpenAI ``usage.prompt_tokens_details.cached_tokens`` and Responses
``usage.input_tokens_details.cached_tokens``, LiteLLM's ``Usage`` (``cache_read_input_tokens``, which it also copies
into ``prompt_tokens_details.cached_tokens``), OTel ``gen_ai.usage.cache_read.input_tokens`` (OpenLLMetry:
``gen_ai.usage.cache_read_input_tokens``).
"""

from __future__ import annotations

import copy
import json

import pytest
from msgspec.structs import replace

from app.settings import ElasticsearchSettings
from detectors.base import Findings
from detectors.documents import event_document, event_document_id
from detectors.event import Event, Identity, Message
from detectors.normalise import normalise
from detectors.normalise.fields import MAX_INT
from detectors.redact import Redactor
from detectors.redelivery import content_digest
from tests.test_normalise_prompt_cache import (
    MODEL_RESPONSE,
    UNCACHED,
    converse_log,
    litellm_payload,
    openai_record,
    otel_span,
    well_typed,
)

CONTEXT = 100_000  # the cached context a coding agent re-reads every request


# --- Bedrock ------------------------------------------------------------------------------------------------------


def test_bedrock_invocation_log_cache_reads() -> None:
    record = converse_log(
        {"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": CONTEXT, "cacheWriteInputTokenCount": 0},
        {"inputTokens": UNCACHED, "outputTokens": 1200},
    )
    event = well_typed(normalise(record))
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_bedrock_converse_usage_cache_reads_when_the_log_has_none() -> None:
    usage = {"inputTokens": UNCACHED, "outputTokens": 1200, "cacheReadInputTokens": CONTEXT, "cacheWriteInputTokens": 0}
    event = normalise(converse_log({"inputTokenCount": UNCACHED}, usage))
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_bedrock_log_and_body_count_the_same_reads_once() -> None:
    record = converse_log(
        {"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": CONTEXT},
        {"inputTokens": UNCACHED, "outputTokens": 1200, "cacheReadInputTokens": CONTEXT},
    )
    assert normalise(record).cache_read_tokens == CONTEXT


def test_bedrock_converse_stream_metadata_usage_cache_reads() -> None:
    record = converse_log({}, {})
    record["operation"] = "ConverseStream"
    record["output"]["outputBodyJson"] = [
        {"contentBlockDelta": {"delta": {"text": "Here is the answer."}, "contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": UNCACHED, "outputTokens": 5, "cacheReadInputTokens": CONTEXT}}},
    ]
    assert normalise(record).cache_read_tokens == CONTEXT


def test_bedrock_invoke_anthropic_body_cache_reads_plain_and_streamed() -> None:
    usage = {"input_tokens": UNCACHED, "output_tokens": 9, "cache_read_input_tokens": CONTEXT}
    record = converse_log({}, {})
    record["operation"] = "InvokeModel"
    record["input"]["inputBodyJson"] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": []}
    record["output"]["outputBodyJson"] = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Done."}],
        "usage": usage,
    }
    assert normalise(record).cache_read_tokens == CONTEXT
    streamed = copy.deepcopy(record)
    streamed["operation"] = "InvokeModelWithResponseStream"
    streamed["output"]["outputBodyJson"] = [
        {"type": "message_start", "message": {"model": "claude-sonnet-4", "usage": {**usage, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    ]
    assert normalise(streamed).cache_read_tokens == CONTEXT


def test_bedrock_openai_format_model_cached_tokens() -> None:
    record = converse_log({}, {})
    record["operation"] = "InvokeModel"
    record["input"]["inputBodyJson"] = {"messages": [{"role": "user", "content": "Hi"}]}
    record["output"]["outputBodyJson"] = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2_048, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1_920}},
    }
    assert normalise(record).cache_read_tokens == 1_920


def test_bedrock_without_cache_reads_says_none_and_zero_reads_are_zero() -> None:
    """A log that names cache writes only says nothing of reads; one that counts 0 reads says there were none."""
    writes_only = converse_log({"inputTokenCount": UNCACHED, "cacheWriteInputTokenCount": CONTEXT}, {})
    assert normalise(writes_only).cache_read_tokens is None
    zero = converse_log({"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": 0}, {})
    assert normalise(zero).cache_read_tokens == 0


# --- OpenAI envelope ----------------------------------------------------------------------------------------------

CHAT_CHOICES = [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]


def test_openai_chat_cached_tokens_are_the_cache_reads() -> None:
    usage = {"prompt_tokens": 2_006, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1_920}}
    event = normalise(openai_record({"object": "chat.completion", "choices": CHAT_CHOICES, "usage": usage}))
    assert (event.input_tokens, event.cache_read_tokens) == (2_006, 1_920)


def test_openai_responses_cached_tokens_are_the_cache_reads() -> None:
    response = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}],
        "usage": {"input_tokens": 125, "output_tokens": 48, "input_tokens_details": {"cached_tokens": 98}},
    }
    event = normalise(openai_record(response))
    assert (event.input_tokens, event.cache_read_tokens) == (125, 98)


def test_openai_streamed_chat_usage_chunk_cache_reads() -> None:
    record = openai_record({})
    record["response"] = [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 2_006,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 1_920},
            },
        },
    ]
    assert normalise(record).cache_read_tokens == 1_920


def test_gateway_logged_anthropic_message_cache_reads() -> None:
    usage = {"input_tokens": UNCACHED, "output_tokens": 5, "cache_read_input_tokens": CONTEXT}
    message = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello"}], "usage": usage}
    event = normalise(openai_record(message))
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_openai_usage_without_details_says_nothing_of_cache_reads() -> None:
    usage = {"prompt_tokens": 2_006, "completion_tokens": 300}
    event = normalise(openai_record({"object": "chat.completion", "choices": CHAT_CHOICES, "usage": usage}))
    assert event.cache_read_tokens is None


# --- LiteLLM ------------------------------------------------------------------------------------------------------


def test_litellm_anthropic_usage_reads_are_counted_once() -> None:
    """LiteLLM's Usage keeps Anthropic's cache_read_input_tokens and copies it into prompt_tokens_details: one
    count of the same tokens."""
    usage = {
        "prompt_tokens": UNCACHED + CONTEXT,
        "completion_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CONTEXT,
        "prompt_tokens_details": {"cached_tokens": CONTEXT},
    }
    event = normalise(litellm_payload(UNCACHED + CONTEXT, usage, MODEL_RESPONSE))
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_litellm_openai_usage_cached_tokens() -> None:
    usage = {"prompt_tokens": 2_006, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1_920}}
    record = litellm_payload(2_006, usage, MODEL_RESPONSE)
    record["custom_llm_provider"] = "openai"
    assert normalise(record).cache_read_tokens == 1_920


def test_litellm_anthropic_messages_pass_through_native_usage() -> None:
    usage = {"input_tokens": UNCACHED, "output_tokens": 7, "cache_read_input_tokens": CONTEXT}
    message = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    record = litellm_payload(UNCACHED, usage, message)
    record["call_type"] = "anthropic_messages"
    event = normalise(record)
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_litellm_responses_call_cached_tokens() -> None:
    usage = {"input_tokens": 125, "output_tokens": 48, "input_tokens_details": {"cached_tokens": 98}}
    response = {
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}],
    }
    record = litellm_payload(125, usage, response)
    record["call_type"] = "aresponses"
    assert normalise(record).cache_read_tokens == 98


def test_litellm_without_a_response_usage_says_nothing_of_cache_reads() -> None:
    """The payload's own prompt_tokens have no cache share beside them; a response redacted by LiteLLM takes its
    usage with it."""
    record = litellm_payload(UNCACHED + CONTEXT, {"cache_read_input_tokens": CONTEXT}, MODEL_RESPONSE)
    record["response"] = "redacted-by-litellm"
    event = normalise(record)
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, None)


# --- OpenTelemetry ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    ["gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"],
    ids=["semconv", "openllmetry"],
)
def test_otel_cache_read_attribute(read: str) -> None:
    event = normalise(otel_span({"gen_ai.usage.input_tokens": UNCACHED + CONTEXT, read: CONTEXT}))
    assert (event.input_tokens, event.cache_read_tokens) == (UNCACHED + CONTEXT, CONTEXT)


def test_otel_both_spellings_of_the_reads_are_one_count() -> None:
    span = otel_span(
        {
            "gen_ai.usage.input_tokens": UNCACHED,
            "gen_ai.usage.cache_read.input_tokens": CONTEXT,
            "gen_ai.usage.cache_read_input_tokens": CONTEXT,
        }
    )
    assert normalise(span).cache_read_tokens == CONTEXT


def test_otel_span_without_cache_reads_says_none() -> None:
    span = otel_span({"gen_ai.usage.input_tokens": UNCACHED, "gen_ai.usage.cache_creation.input_tokens": CONTEXT})
    assert normalise(span).cache_read_tokens is None


# --- counts that are not believed ---------------------------------------------------------------------------------


def test_reads_beyond_the_input_tokens_are_clipped_to_them() -> None:
    """OpenAI's cached_tokens are a share of prompt_tokens, which are not raised to them: a log claiming more cached
    than input tokens (a forged span, a buggy gateway) must not discount more tokens than the event has."""
    usage = {"prompt_tokens": 100, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5_000}}
    event = normalise(openai_record({"object": "chat.completion", "choices": CHAT_CHOICES, "usage": usage}))
    assert (event.input_tokens, event.cache_read_tokens) == (100, 100)


def test_reads_of_unknown_input_tokens_are_unknown() -> None:
    usage = {"completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 5_000}}
    event = normalise(openai_record({"object": "chat.completion", "choices": CHAT_CHOICES, "usage": usage}))
    assert (event.input_tokens, event.cache_read_tokens) == (None, None)


def test_cache_reads_that_are_not_counts_are_ignored_and_stay_in_a_long() -> None:
    record = converse_log(
        {"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": "lots"},
        {"inputTokens": UNCACHED, "outputTokens": 1, "cacheReadInputTokens": True},
    )
    assert well_typed(normalise(record)).cache_read_tokens is None
    huge = converse_log({"inputTokenCount": MAX_INT, "cacheReadInputTokenCount": MAX_INT}, {})
    event = well_typed(normalise(huge))
    assert event.cache_read_tokens == event.input_tokens == MAX_INT


# --- the event document and its id --------------------------------------------------------------------------------

REDACTOR = Redactor(b"deployment-secret")
EVENT = Event(
    id="client-chosen-0001",
    timestamp=1_768_492_800.0,
    dataset="bedrock",
    provider="aws.bedrock",
    request_model="anthropic.claude-sonnet-4",
    input_tokens=UNCACHED + CONTEXT,
    output_tokens=1200,
    identity=Identity(user_id="dev-agent"),
    input_messages=[Message(role="user", content="Refactor billing.py")],
    output_messages=[Message(role="assistant", content="Done.")],
)
# content_digest(EVENT, digest_size=16, key=b"k") before Event had cache_read_tokens (commit 7a5953f)
DIGEST_BEFORE_THE_FIELD = "03dc288a981317ab95711067e0a862c4"


def test_the_reads_are_indexed_under_the_semantic_conventions_name() -> None:
    read = event_document(replace(EVENT, cache_read_tokens=CONTEXT), Findings(), REDACTOR)
    assert read["gen_ai"]["usage"] == {
        "input_tokens": UNCACHED + CONTEXT,
        "output_tokens": 1200,
        "cache_read": {"input_tokens": CONTEXT},
    }
    assert event_document(EVENT, Findings(), REDACTOR)["gen_ai"]["usage"]["cache_read"] == {"input_tokens": None}


def test_the_gen_ai_template_maps_the_reads_as_a_long() -> None:
    template = json.loads((ElasticsearchSettings().templates_dir / "component" / "abusewatch-gen-ai.json").read_text())
    usage = template["template"]["mappings"]["properties"]["gen_ai"]["properties"]["usage"]["properties"]
    assert usage["cache_read"] == {"properties": {"input_tokens": {"type": "long"}}}


def test_an_event_without_cache_reads_keeps_the_digest_it_had_before_the_field() -> None:
    """Document ids and the stream's dedupe memory hash the event: a record redelivered across the upgrade must
    meet its own document, not a second one."""
    assert content_digest(EVENT, digest_size=16, key=b"k").hex() == DIGEST_BEFORE_THE_FIELD


def test_cache_reads_tell_events_apart_and_a_redelivery_keeps_its_id() -> None:
    read = replace(EVENT, cache_read_tokens=CONTEXT)
    assert event_document_id(read, REDACTOR) != event_document_id(EVENT, REDACTOR)
    assert event_document_id(read, REDACTOR) != event_document_id(replace(EVENT, cache_read_tokens=0), REDACTOR)
    record = converse_log({"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": CONTEXT}, {})
    assert event_document_id(normalise(record), REDACTOR) == event_document_id(normalise(record), REDACTOR)
