"""Prompt-cache tokens count as input tokens in every format (red-team finding H5).

``Event.input_tokens`` is every input token the provider processed: uncached, written to the prompt cache and read
from it. Where a vendor counts the cache apart, the normaliser adds it; where the vendor's count already holds it, it is
not added twice. Shapes follow the vendors' references: Anthropic Messages ``usage`` (``input_tokens`` beside
``cache_creation_input_tokens`` / ``cache_read_input_tokens``), Bedrock Converse ``TokenUsage`` (``inputTokens``
beside ``cacheReadInputTokens`` / ``cacheWriteInputTokens``), the Bedrock invocation log (``input.inputTokenCount``
beside ``cacheReadInputTokenCount`` / ``cacheWriteInputTokenCount``), OpenAI usage (``prompt_tokens_details`` /
``input_tokens_details.cached_tokens``, part of the total), LiteLLM's ``Usage`` (``prompt_tokens`` beside the Anthropic
names) and the GenAI semantic conventions (``gen_ai.usage.cache_read.input_tokens`` /
``gen_ai.usage.cache_creation.input_tokens``, part of ``gen_ai.usage.input_tokens``; OpenLLMetry's
``gen_ai.usage.cache_read_input_tokens`` / ``gen_ai.usage.cache_creation_input_tokens``).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from detectors.event import Event
from detectors.normalise import normalise
from detectors.normalise.fields import MAX_INT

CACHE_WRITE = 100_000  # a fresh prompt-cache entry each request: the denial-of-wallet shape of H5
UNCACHED = 60


def converse_log(log_input: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """A Bedrock Converse invocation log: the shape s2_wallet.py (H5) sent."""
    return {
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": "2026-02-03T11:00:00Z",
        "accountId": "111122223333",
        "identity": {"arn": "arn:aws:iam::111122223333:user/stolen-ci-user"},
        "region": "us-east-1",
        "requestId": "req-cache-1",
        "operation": "Converse",
        "modelId": "anthropic.claude-3-5-sonnet-20241022-v2:0",
        "input": {
            "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "Answer from the document."}]}]},
            **log_input,
        },
        "output": {
            "outputBodyJson": {
                "output": {"message": {"role": "assistant", "content": [{"text": "Here is the answer."}]}},
                "stopReason": "end_turn",
                "usage": usage,
            },
            "outputTokenCount": 1200,
        },
    }


def well_typed(event: Event) -> Event:
    assert msgspec.json.decode(msgspec.json.encode(event), type=Event, strict=True) == event
    return event


# --- Bedrock ------------------------------------------------------------------------------------------------------


def test_bedrock_invocation_log_cache_writes_are_input_tokens() -> None:
    """H5: inputTokenCount holds the uncached tail only; the 100,000 tokens written to the cache were not counted."""
    record = converse_log(
        {"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": CACHE_WRITE},
        {
            "inputTokens": UNCACHED,
            "outputTokens": 1200,
            "cacheReadInputTokens": 0,
            "cacheWriteInputTokens": CACHE_WRITE,
        },
    )
    event = well_typed(normalise(record))
    assert (event.input_tokens, event.output_tokens) == (UNCACHED + CACHE_WRITE, 1200)


def test_bedrock_invocation_log_cache_reads_are_input_tokens() -> None:
    record = converse_log(
        {"inputTokenCount": 2, "cacheReadInputTokenCount": 95_500, "cacheWriteInputTokenCount": 0},
        {"inputTokens": 2, "outputTokens": 1200},
    )
    assert normalise(record).input_tokens == 95_502


def test_bedrock_converse_usage_cache_counts_when_the_log_has_none() -> None:
    """The response body's TokenUsage counts the cache apart from inputTokens too; it stands in for log counts."""
    record = converse_log(
        {"inputTokenCount": UNCACHED},
        {
            "inputTokens": UNCACHED,
            "outputTokens": 1200,
            "cacheReadInputTokens": 500,
            "cacheWriteInputTokens": CACHE_WRITE,
        },
    )
    assert normalise(record).input_tokens == UNCACHED + 500 + CACHE_WRITE
    del record["input"]["inputTokenCount"]
    assert normalise(record).input_tokens == UNCACHED + 500 + CACHE_WRITE


def test_bedrock_converse_stream_metadata_usage_cache_counts() -> None:
    record = converse_log({}, {})
    record["operation"] = "ConverseStream"
    record["output"]["outputBodyJson"] = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Here is the answer."}, "contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": UNCACHED, "outputTokens": 5, "cacheWriteInputTokens": CACHE_WRITE}}},
    ]
    event = normalise(record)
    assert event.output_messages[0].content == "Here is the answer."
    assert event.input_tokens == UNCACHED + CACHE_WRITE


def test_bedrock_invoke_anthropic_body_cache_counts_plain_and_streamed() -> None:
    usage = {"input_tokens": UNCACHED, "output_tokens": 9, "cache_creation_input_tokens": CACHE_WRITE}
    usage["cache_read_input_tokens"] = 2_000
    record = converse_log({}, {})
    record["operation"] = "InvokeModel"
    record["input"]["inputBodyJson"] = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64, "messages": []}
    record["output"]["outputBodyJson"] = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Done."}],
        "stop_reason": "end_turn",
        "usage": usage,
    }
    assert normalise(record).input_tokens == UNCACHED + CACHE_WRITE + 2_000
    streamed = copy.deepcopy(record)
    streamed["operation"] = "InvokeModelWithResponseStream"
    streamed["output"]["outputBodyJson"] = [
        {"type": "message_start", "message": {"model": "claude-3-5-sonnet", "usage": {**usage, "output_tokens": 1}}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Done."}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    ]
    event = normalise(streamed)
    assert (event.input_tokens, event.output_tokens) == (UNCACHED + CACHE_WRITE + 2_000, 1200)


def test_bedrock_openai_format_model_cached_tokens_are_not_added_twice() -> None:
    """gpt-oss on Bedrock answers with a chat.completion: its prompt_tokens already hold the cached tokens."""
    record = converse_log({}, {})
    record["operation"] = "InvokeModel"
    record["input"]["inputBodyJson"] = {"messages": [{"role": "user", "content": "Hi"}]}
    record["output"]["outputBodyJson"] = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2_048, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1_920}},
    }
    assert normalise(record).input_tokens == 2_048


# --- OpenAI envelope (OpenAI itself, and gateways proxying the Anthropic Messages API) -----------------------------


def openai_record(response: dict[str, Any]) -> dict[str, Any]:
    return {"request": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, "response": response}


def test_openai_cached_tokens_are_already_in_the_prompt_tokens() -> None:
    chat = openai_record(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 2_006,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1_920},
            },
        }
    )
    assert (normalise(chat).input_tokens, normalise(chat).output_tokens) == (2_006, 300)
    responses = openai_record(
        {
            "object": "response",
            "status": "completed",
            "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]}],
            "usage": {"input_tokens": 125, "output_tokens": 48, "input_tokens_details": {"cached_tokens": 98}},
        }
    )
    assert normalise(responses).input_tokens == 125


def test_gateway_logged_anthropic_message_adds_cache_tokens() -> None:
    record = openai_record(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": UNCACHED,
                "output_tokens": 5,
                "cache_creation_input_tokens": CACHE_WRITE,
                "cache_read_input_tokens": 300,
            },
        }
    )
    assert normalise(record).input_tokens == UNCACHED + CACHE_WRITE + 300


# --- LiteLLM ------------------------------------------------------------------------------------------------------


def litellm_payload(prompt_tokens: int | None, usage: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "chatcmpl-cache",
        "call_type": "acompletion",
        "status": "success",
        "custom_llm_provider": "anthropic",
        "startTime": 1768492800.0,
        "endTime": 1768492801.0,
        "model": "claude-sonnet-4",
        "messages": [{"role": "user", "content": "Hi"}],
        "response": {**response, "usage": usage},
        "model_parameters": {},
        "hidden_params": {},
    }
    if prompt_tokens is not None:
        record["prompt_tokens"] = prompt_tokens
    return record


MODEL_RESPONSE = {
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
}


def test_litellm_prompt_tokens_without_the_cache_writes_are_raised_to_the_cache_counts() -> None:
    """Some LiteLLM versions fold only the cache reads into prompt_tokens; its Usage keeps the Anthropic counts."""
    usage = {
        "prompt_tokens": UNCACHED + 5_000,
        "completion_tokens": 7,
        "cache_creation_input_tokens": CACHE_WRITE,
        "cache_read_input_tokens": 5_000,
        "prompt_tokens_details": {"cached_tokens": 5_000},
    }
    event = normalise(litellm_payload(UNCACHED + 5_000, usage, MODEL_RESPONSE))
    assert event.input_tokens == CACHE_WRITE + 5_000  # at least the cache; the uncached 60 are not told apart


def test_litellm_prompt_tokens_holding_the_cache_are_not_added_twice() -> None:
    total = UNCACHED + CACHE_WRITE + 5_000
    usage = {
        "prompt_tokens": total,
        "completion_tokens": 7,
        "cache_creation_input_tokens": CACHE_WRITE,
        "cache_read_input_tokens": 5_000,
    }
    assert normalise(litellm_payload(total, usage, MODEL_RESPONSE)).input_tokens == total


def test_litellm_anthropic_messages_pass_through_response_usage() -> None:
    usage = {"input_tokens": UNCACHED, "output_tokens": 7, "cache_creation_input_tokens": CACHE_WRITE}
    message = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    record = litellm_payload(None, usage, message)
    record["call_type"] = "anthropic_messages"
    assert normalise(record).input_tokens == UNCACHED + CACHE_WRITE
    record["prompt_tokens"] = UNCACHED  # a payload whose own count left the cache out
    assert normalise(record).input_tokens == UNCACHED + CACHE_WRITE


# --- OpenTelemetry ------------------------------------------------------------------------------------------------


def otel_span(usage: dict[str, int]) -> dict[str, Any]:
    attributes = [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
    attributes += [{"key": key, "value": {"intValue": str(value)}} for key, value in usage.items()]
    span = {"traceId": "7d4c9e2f1a0b3c5d6e7f8091a2b3c4d5", "spanId": "1a2b3c4d5e6f7081", "attributes": attributes}
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"spans": [span]}]}]}


def test_otel_input_tokens_hold_the_cache_by_convention() -> None:
    span = otel_span(
        {
            "gen_ai.usage.input_tokens": UNCACHED + CACHE_WRITE + 300,
            "gen_ai.usage.cache_creation.input_tokens": CACHE_WRITE,
            "gen_ai.usage.cache_read.input_tokens": 300,
        }
    )
    assert normalise(span).input_tokens == UNCACHED + CACHE_WRITE + 300


@pytest.mark.parametrize(
    ("write", "read"),
    [
        ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_read.input_tokens"),
        ("gen_ai.usage.cache_creation_input_tokens", "gen_ai.usage.cache_read_input_tokens"),  # OpenLLMetry
    ],
)
def test_otel_input_tokens_that_leave_the_cache_out_are_raised_to_it(write: str, read: str) -> None:
    """An instrumentation that passes on Anthropic's own input_tokens breaks the convention: the count is taken as
    at least the cache tokens the span reports."""
    span = otel_span({"gen_ai.usage.input_tokens": UNCACHED, write: CACHE_WRITE, read: 300})
    assert normalise(span).input_tokens == CACHE_WRITE + 300


def test_otel_both_spellings_of_one_cache_count_are_not_added() -> None:
    span = otel_span(
        {
            "gen_ai.usage.input_tokens": UNCACHED,
            "gen_ai.usage.cache_creation.input_tokens": CACHE_WRITE,
            "gen_ai.usage.cache_creation_input_tokens": CACHE_WRITE,
        }
    )
    assert normalise(span).input_tokens == CACHE_WRITE


# --- hostile counts -----------------------------------------------------------------------------------------------


def test_cache_counts_that_are_not_counts_are_ignored_and_sums_stay_in_a_long() -> None:
    record = converse_log(
        {"inputTokenCount": UNCACHED, "cacheReadInputTokenCount": "lots", "cacheWriteInputTokenCount": -5},
        {"inputTokens": UNCACHED, "outputTokens": 1, "cacheWriteInputTokens": [1], "cacheReadInputTokens": True},
    )
    assert well_typed(normalise(record)).input_tokens == UNCACHED
    huge = converse_log(
        {"inputTokenCount": MAX_INT, "cacheReadInputTokenCount": MAX_INT, "cacheWriteInputTokenCount": MAX_INT}, {}
    )
    assert well_typed(normalise(huge)).input_tokens == MAX_INT
