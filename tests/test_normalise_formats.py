"""Each source format normalises its realistic records (tests/fixtures/formats/<format>/) to the right Event."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors.event import COMPLETION, DOCUMENT, PROMPT, SYSTEM, TOOL_ARGUMENTS, TOOL_NAME, TOOL_RESULT, Event
from detectors.normalise import FORMATS, NormaliseError, detect_format, normalise, normalise_many

FIXTURES = Path(__file__).parent / "fixtures" / "formats"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def fixture_paths() -> list[Path]:
    return sorted(FIXTURES.glob("*/*.json"))


def assert_well_typed(event: Event) -> None:
    """msgspec does not check types on construction; a strict round trip does."""
    assert msgspec.json.decode(msgspec.json.encode(event), type=Event, strict=True) == event


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_is_detected_as_its_folder_format_and_normalises(path: Path) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    assert detect_format(record) == path.parent.name
    events = normalise_many(record)
    assert events
    for event in events:
        assert event.dataset == path.parent.name
        assert event.id
        assert 1.7e9 < event.timestamp < 1.8e9
        assert_well_typed(event)


def test_registry_names_the_four_formats() -> None:
    assert set(FORMATS) == {"litellm", "openai", "bedrock", "otel"}


def test_unknown_record_is_a_normalise_error() -> None:
    with pytest.raises(NormaliseError) as caught:
        normalise({"hello": "world"})
    assert caught.value.reason == "unknown_format"
    assert "hello" in caught.value.detail


# --- LiteLLM -------------------------------------------------------------------------------------------------


def test_litellm_success_maps_identity_rag_and_params() -> None:
    event = normalise(load("litellm/chat_success_rag.json"))
    assert event.id == "chatcmpl-8c1f0e2a-61a4-4d47-9b8e-0c2f7f0f4a11"
    assert event.provider == "openai"
    assert event.operation == "chat"
    assert event.request_model == "support-gpt"
    assert event.response_model == "gpt-4o-mini-2024-07-18"
    assert event.system_instructions.startswith("You are Acme's support assistant")
    assert [m.role for m in event.input_messages] == ["user"]
    assert event.input_messages[0].content == "How do I reset my two-factor authentication?"
    assert event.output_messages[0].content.startswith("Open Settings")
    assert (event.input_tokens, event.output_tokens) == (61, 14)
    assert event.duration_ms == 1500.0
    assert event.outcome == "success"
    assert event.identity.user_id == "cust-4821"
    assert event.identity.team_id == "team-support"
    assert event.identity.organization_id == "org-acme"
    assert event.identity.source_ip == "198.51.100.23"
    assert event.identity.user_agent == "support-widget/2.3.1"
    assert event.identity.session_id == "sess-77a1"
    assert event.identity.api_key_hash.startswith("88dc28d0")
    assert event.service_name == "support-bot"
    assert event.retrieved_documents[0].source == "help/2fa-reset.md"
    assert "Reset authenticator" in event.retrieved_documents[0].content
    assert event.request_params == {"temperature": 0.2, "max_tokens": 400, "top_p": 1}
    fields = {field for field, _ in event.texts()}
    assert {SYSTEM, PROMPT, DOCUMENT, COMPLETION} <= fields


def test_litellm_failure_keeps_error_code_and_falls_back_to_key_user() -> None:
    event = normalise(load("litellm/failure_rate_limit.json"))
    assert event.outcome == "failure"
    assert event.error_code == "429"
    assert event.output_messages == []
    assert event.identity.user_id == "dana@acme.example"
    assert event.identity.session_id == "nb-2201"


def test_litellm_guardrails_are_kept_and_raw_key_is_hashed() -> None:
    record = load("litellm/guardrail_intervened.json")
    raw_key = record["metadata"]["user_api_key_hash"]
    event = normalise(record)
    assert [(g.source, g.action) for g in event.guardrails] == [
        ("litellm:lakera-prompt-injection", "blocked"),
        ("litellm:presidio-pii", "flagged"),
    ]
    assert event.guardrails[1].categories == ["EMAIL_ADDRESS"]
    assert event.identity.api_key_hash == hashlib.sha256(raw_key.encode()).hexdigest()[:16]
    assert raw_key not in msgspec.json.encode(event).decode()
    assert event.request_params["logprobs"] is True
    assert event.request_params["top_logprobs"] == 5


def test_litellm_redacted_messages_mark_the_event() -> None:
    event = normalise(load("litellm/redacted.json"))
    assert event.content_redacted
    assert event.input_messages == [] and event.output_messages == []
    assert (event.input_tokens, event.output_tokens) == (120, 80)


def test_litellm_text_completion_string_prompt_and_string_times() -> None:
    event = normalise(load("litellm/text_completion.json"))
    assert event.operation == "text_completion"
    assert event.input_messages[0].content.startswith("Translate to French")
    assert event.output_messages[0].content == "Où est la gare ?"
    assert event.timestamp == 1768485600.0
    assert event.duration_ms == pytest.approx(800.0, abs=0.01)


def test_litellm_record_without_id_gets_a_stable_id() -> None:
    record = load("litellm/text_completion.json")
    del record["id"]
    first, second = normalise(record), normalise(copy.deepcopy(record))
    assert first.id == second.id and len(first.id) == 32
    record["messages"] = "something else"
    assert normalise(record).id != first.id


# --- OpenAI --------------------------------------------------------------------------------------------------


def test_openai_chat_envelope_with_tools_tool_results_and_documents() -> None:
    record = load("openai/chat_tools.json")
    event = normalise(record)
    assert event.id == "req_9f2c1a7b3e"
    assert event.timestamp == pytest.approx(1768468364.12)
    assert event.system_instructions.startswith("You are the analytics agent")  # developer role
    assert [m.role for m in event.input_messages] == ["user", "assistant", "tool", "user"]
    assert event.input_messages[-1].content == "And compare with the week before."  # image part skipped
    assert event.input_messages[2].tool_call_id == "call_1"
    call = event.output_tool_calls()[0]
    assert (call.name, call.id) == ("run_sql", "call_2")
    assert json.loads(call.arguments)["query"].startswith("select week")
    assert event.finish_reasons == ["tool_calls"]
    assert [t.name for t in event.tool_definitions] == ["run_sql", "send_email"]
    assert [d.id for d in event.retrieved_documents] == ["doc-17", None]
    assert event.request_params == {
        "temperature": 0.1,
        "top_p": 0.9,
        "seed": 7,
        "logprobs": False,
        "max_completion_tokens": 800,
    }
    assert event.identity.api_key_hash == hashlib.sha256(record["api_key"].encode()).hexdigest()[:16]
    assert event.identity.team_id == "proj_analytics"
    assert event.service_name == "analytics-agent"
    assert event.duration_ms == 2310.5
    fields = [field for field, _ in event.texts()]
    # only what is new since the last assistant turn is scanned as input
    assert fields.count(PROMPT) == 1 and fields.count(TOOL_RESULT) == 1
    assert TOOL_NAME in fields and TOOL_ARGUMENTS in fields


def test_openai_responses_api_items() -> None:
    event = normalise(load("openai/responses_api.json"))
    assert event.id == "resp_67ccd2bed1ec8190b14f964abc054267"
    assert event.system_instructions.startswith("You are a coding assistant")
    assert [m.role for m in event.input_messages] == ["user", "assistant", "tool"]
    assert event.input_messages[1].tool_calls[0].name == "read_file"
    assert event.input_messages[2].content.startswith("def test_get")
    assert event.output_messages[0].content.startswith("The response body")
    assert event.output_tool_calls()[0].id == "call_2"
    assert (event.input_tokens, event.output_tokens) == (328, 52)
    assert event.identity.session_id == "conv_68a1"
    assert [t.name for t in event.tool_definitions] == ["read_file", "web_search_preview"]
    assert event.finish_reasons == ["completed"]


def test_openai_streamed_chunks_are_reassembled() -> None:
    event = normalise(load("openai/stream_chunks.json"))
    assert event.output_messages[0].content == "¡Hola!"
    call = event.output_tool_calls()[0]
    assert (call.name, call.id, json.loads(call.arguments)) == ("get_weather", "call_w", {"city": "Madrid"})
    assert event.finish_reasons == ["tool_calls"]
    assert (event.input_tokens, event.output_tokens) == (17, 12)
    assert event.request_params == {"stream": True}


def test_openai_error_and_moderation() -> None:
    event = normalise(load("openai/error_moderation.json"))
    assert event.outcome == "failure"
    assert event.error_code == "content_policy_violation"
    assert event.guardrails[0].source == "openai.moderation"
    assert event.guardrails[0].action == "flagged"
    assert event.guardrails[0].categories == ["illicit/violent", "violence"]


def test_openai_content_filter_finish_reason_is_a_guardrail() -> None:
    record = load("openai/chat_tools.json")
    record["response"]["choices"][0]["finish_reason"] = "content_filter"
    assert [(g.source, g.action) for g in normalise(record).guardrails] == [("openai.content_filter", "blocked")]


def test_openai_envelope_without_content_is_redacted() -> None:
    event = normalise({"request": {"model": "gpt-4o", "input": None}, "user": "u1", "timestamp": 1768471800})
    assert event.content_redacted
    assert event.identity.user_id == "u1"


# --- Bedrock -------------------------------------------------------------------------------------------------


def test_bedrock_invoke_anthropic_tools_and_results() -> None:
    event = normalise(load("bedrock/invoke_anthropic.json"))
    assert event.provider == "aws.bedrock"
    assert event.identity.user_id.startswith("arn:aws:sts::111122223333:assumed-role")
    assert event.identity.organization_id == "111122223333"
    assert event.system_instructions == "You are Acme's support assistant."
    assert [m.role for m in event.input_messages] == ["user", "assistant", "tool"]
    assert event.input_messages[1].tool_calls[0].arguments == '{"order_id":"1042"}'
    assert event.input_messages[2].tool_call_id == "toolu_01"
    assert "shipped" in event.input_messages[2].content
    assert event.output_messages[0].content.startswith("Order 1042 has shipped")
    assert event.tool_definitions[0].name == "lookup_order"
    assert (event.input_tokens, event.output_tokens) == (233, 19)
    assert event.request_params == {"max_tokens": 512, "temperature": 0.2}


def test_bedrock_anthropic_stream_reassembles_to_the_same_text() -> None:
    whole = normalise(load("bedrock/invoke_anthropic.json"))
    streamed = normalise(load("bedrock/invoke_anthropic_stream.json"))
    assert streamed.output_messages[0].content == whole.output_messages[0].content
    call = streamed.output_tool_calls()[0]
    assert (call.name, call.id, json.loads(call.arguments)) == (
        "send_email",
        "toolu_02",
        {"to": "customer@example.com"},
    )
    assert streamed.finish_reasons == ["tool_use"]
    assert streamed.response_model == "claude-3-5-sonnet-20240620"
    assert streamed.request_params["stream"] is True


def test_bedrock_converse_stream_reassembly() -> None:
    event = normalise(load("bedrock/converse_stream.json"))
    assert event.output_messages[0].content == "Let me check the repository."
    call = event.output_tool_calls()[0]
    assert (call.name, call.id, json.loads(call.arguments)) == ("list_files", "tooluse_1", {"path": "."})
    assert event.finish_reasons == ["tool_use"]
    assert event.tool_definitions[0].name == "list_files"


def test_bedrock_stream_chunks_wrapped_as_base64_bytes() -> None:
    import base64

    record = load("bedrock/converse_stream.json")
    record["output"]["outputBodyJson"] = [
        {"chunk": {"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()}}
        for chunk in record["output"]["outputBodyJson"]
    ]
    assert normalise(record).output_messages[0].content == "Let me check the repository."


def test_bedrock_llama_and_titan_bodies() -> None:
    llama = normalise(load("bedrock/llama_stream.json"))
    assert llama.output_messages[0].content == "The meeting is now on Friday."
    assert "Summarise" in llama.input_messages[0].content
    assert llama.request_params == {"max_tokens": 128, "temperature": 0.5, "top_p": 0.9, "stream": True}
    titan = normalise(load("bedrock/titan_text.json"))
    assert titan.output_messages[0].content == "Guten Morgen"
    assert titan.finish_reasons == ["FINISH"]
    assert titan.request_params["max_tokens"] == 100


def test_bedrock_converse_guardrail_and_request_metadata_identity() -> None:
    event = normalise(load("bedrock/converse_guardrail.json"))
    assert event.identity.user_id == "cust-9001"
    assert event.identity.session_id == "chat-55"
    assert event.service_name == "support-bot"
    assert event.system_instructions == "You are a helpful support assistant."
    (verdict,) = event.guardrails
    assert verdict.source == "bedrock.guardrail"
    assert verdict.action == "blocked"
    assert verdict.categories == ["EMAIL", "PROMPT_ATTACK"]
    assert "someone@example.com" not in msgspec.json.encode(event).decode()  # PII match is not copied


def test_bedrock_invoke_guardrail_with_body_in_s3() -> None:
    event = normalise(load("bedrock/invoke_guardrail_s3.json"))
    assert event.content_redacted
    assert event.input_messages == []
    assert event.input_tokens == 52000
    assert [(g.action, g.categories) for g in event.guardrails] == [("blocked", ["Investment advice"])]


def test_bedrock_error_code_marks_failure() -> None:
    record = load("bedrock/titan_text.json")
    record["errorCode"] = "ThrottlingException"
    del record["output"]
    event = normalise(record)
    assert (event.outcome, event.error_code) == ("failure", "ThrottlingException")


# --- OpenTelemetry -------------------------------------------------------------------------------------------


def test_otel_export_yields_one_event_per_genai_span() -> None:
    record = load("otel/export_multi_span.json")
    events = normalise_many(record)
    assert [e.operation for e in events] == ["chat", "execute_tool", "chat"]  # the DB span is skipped
    chat, tool, failed = events
    assert chat.id == "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174"
    assert chat.service_name == "analytics-agent"
    assert chat.provider == "openai"
    assert chat.system_instructions == "You are the analytics agent."
    assert [m.role for m in chat.input_messages] == ["user", "assistant", "tool"]
    assert chat.output_tool_calls()[0].name == "run_sql"
    assert chat.finish_reasons == ["tool_calls"]
    assert chat.request_params == {"temperature": 0.2, "max_tokens": 500, "seed": 42}
    assert chat.identity.session_id == "conv-901"
    assert chat.identity.user_agent == "analytics-ui/4.2"
    assert chat.duration_ms == 1500.0
    assert tool.output_tool_calls()[0].result.startswith('[["Initech"')
    assert (failed.outcome, failed.error_code, failed.provider) == ("failure", "overloaded_error", "anthropic")
    assert failed.service_name == "support-bot"
    assert failed.content_redacted
    with pytest.raises(NormaliseError):
        normalise(record)  # several events: normalise_many is the API for exports


def test_otel_without_content_still_normalises() -> None:
    event = normalise(load("otel/no_content.json"))
    assert event.content_redacted
    assert (event.input_tokens, event.output_tokens) == (88, 40)
    assert event.finish_reasons == ["stop"]


def test_otel_legacy_flattened_prompt_attributes() -> None:
    event = normalise(load("otel/legacy_openllmetry.json"))
    assert event.system_instructions == "You write Python."
    assert "Write a function that reverses a string." in [m.content for m in event.input_messages]
    assert event.output_messages[0].content.startswith("def reverse")
    assert (event.input_tokens, event.output_tokens) == (21, 9)
    assert event.identity.user_id == "dev-302"


def test_otel_export_without_genai_spans_yields_nothing() -> None:
    record = load("otel/export_multi_span.json")
    spans = record["resourceSpans"][0]["scopeSpans"][0]["spans"]
    record["resourceSpans"] = [{"scopeSpans": [{"spans": [spans[2]]}]}]
    assert normalise_many(record) == []


# --- limits --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["litellm", "openai", "bedrock", "otel"])
def test_ten_megabyte_message_is_truncated_and_flagged(fmt: str) -> None:
    huge = "A" * (10 * 1024 * 1024)
    records = {
        "litellm": lambda: {**load("litellm/text_completion.json"), "messages": [{"role": "user", "content": huge}]},
        "openai": lambda: {"request": {"messages": [{"role": "user", "content": huge}]}},
        "bedrock": lambda: {
            **load("bedrock/titan_text.json"),
            "input": {"inputBodyJson": {"inputText": huge}},
        },
        "otel": lambda: _otel_with_prompt(huge),
    }
    event = normalise(records[fmt](), max_text_chars=1000)
    assert event.truncated
    prompt = next(text for field, text in event.texts() if field == PROMPT)
    assert prompt == "A" * 1000


def _otel_with_prompt(text: str) -> dict[str, Any]:
    record = load("otel/no_content.json")
    span = record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])
    span["attributes"].append({"key": "gen_ai.input.messages", "value": {"stringValue": messages}})
    return record


def test_short_texts_are_not_flagged_truncated() -> None:
    assert not normalise(load("openai/chat_tools.json")).truncated


def test_raw_hex_api_key_is_never_stored() -> None:
    azure_style = "0123456789abcdef0123456789abcdef"  # Azure OpenAI keys are 32 hex chars
    for field in ("api_key", "api_key_hash"):
        event = normalise({"request": {"model": "gpt-4o", "messages": []}, field: azure_style})
        assert event.identity.api_key_hash == hashlib.sha256(azure_style.encode()).hexdigest()[:16]
    digest = hashlib.sha256(b"k").hexdigest()
    assert normalise({"request": {"model": "m"}, "api_key_hash": digest}).identity.api_key_hash == digest


def test_litellm_anthropic_messages_passthrough() -> None:
    event = normalise(load("litellm/anthropic_messages.json"))
    assert event.system_instructions == "You are a weather bot."
    assert [m.role for m in event.input_messages] == ["user", "assistant", "tool"]
    assert event.input_messages[1].content == "Let me check."
    assert event.input_messages[1].tool_calls[0].arguments == '{"city":"Paris"}'
    assert (event.input_messages[2].tool_call_id, event.input_messages[2].content) == ("toolu_9", "18°C, light rain")
    assert event.output_messages[0].content == "It's 18°C with light rain in Paris."
    assert event.finish_reasons == ["end_turn"]
    assert event.identity.user_id == "dev-302"


def test_openai_envelope_metadata_identity() -> None:
    record = {"request": {"model": "m", "messages": []}, "metadata": {"user_id": "u-7", "session_id": "s-9"}}
    identity = normalise(record).identity
    assert (identity.user_id, identity.session_id) == ("u-7", "s-9")


def test_openai_error_given_as_a_string_is_a_failure() -> None:
    event = normalise({"request": {"model": "m", "messages": []}, "error": "upstream timeout"})
    assert (event.outcome, event.error_code) == ("failure", None)
