"""The canonical event: which texts detectors see, identity keys, stable ids."""

from detectors.event import (
    COMPLETION,
    DOCUMENT,
    PROMPT,
    SYSTEM,
    TOOL_ARGUMENTS,
    TOOL_NAME,
    TOOL_RESULT,
    Event,
    Identity,
    Message,
    RetrievedDocument,
    ToolCall,
    stable_event_id,
)


def chat(*messages: Message, **kwargs) -> Event:
    return Event(id="e1", timestamp=1_700_000_000.0, dataset="test", input_messages=list(messages), **kwargs)


def test_new_input_is_what_follows_the_last_assistant_turn():
    event = chat(
        Message(role="user", content="old question"),
        Message(role="assistant", content="old answer"),
        Message(role="user", content="new question"),
    )
    assert [m.content for m in event.new_input()] == ["new question"]


def test_new_input_without_assistant_turn_is_everything():
    event = chat(Message(role="system", content="s"), Message(role="user", content="q"))
    assert len(event.new_input()) == 2


def test_texts_name_each_detection_field():
    event = chat(
        Message(role="user", content="earlier"),
        Message(role="assistant", content="", tool_calls=[ToolCall(name="search", arguments="{}")]),
        Message(role="tool", content="tool output", tool_call_id="c1"),
        system_instructions="You are a bot",
        retrieved_documents=[RetrievedDocument(content="a document")],
        output_messages=[
            Message(
                role="assistant",
                content="the answer",
                tool_calls=[ToolCall(name="send_email", arguments='{"to": "x"}', result="sent")],
            )
        ],
    )
    assert list(event.texts()) == [
        (SYSTEM, "You are a bot"),
        (TOOL_RESULT, "tool output"),
        (DOCUMENT, "a document"),
        (COMPLETION, "the answer"),
        (TOOL_NAME, "send_email"),
        (TOOL_ARGUMENTS, '{"to": "x"}'),
        (TOOL_RESULT, "sent"),
    ]
    assert (PROMPT, "earlier") not in list(event.texts())


def test_identity_key_prefers_the_most_specific_identity():
    assert Identity(user_id="u", api_key_hash="k", source_ip="1.2.3.4").key() == "user:u"
    assert Identity(api_key_hash="k", source_ip="1.2.3.4").key() == "key:k"
    assert Identity(source_ip="1.2.3.4").key() == "ip:1.2.3.4"
    assert Identity().key() == "anonymous"


def test_stable_event_id_is_deterministic_and_sensitive_to_content():
    assert stable_event_id("a", 1.0, None) == stable_event_id("a", 1.0, None)
    assert stable_event_id("a", 1.0) != stable_event_id("a", 2.0)
    assert stable_event_id("ab", "c") != stable_event_id("a", "bc")
