"""Without a key and without a client, the library says both ways forward: a key, or the offline emulator."""

from __future__ import annotations

import pytest

from turnkeep import ConfigError, Conversation
from turnkeep.emulator import EmulatorServer


def test_sending_without_a_key_or_a_client_names_both_ways_forward_and_keeps_nothing() -> None:
    chat = Conversation("claude-sonnet-4-6")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY") as raised:
        chat.send("What is the capital of France?")
    assert "EmulatorServer().start().client()" in str(raised.value)
    assert not chat.pending
    assert chat.messages == []


def test_planning_needs_no_credentials() -> None:
    chat = Conversation("claude-sonnet-4-6")
    assert chat.explain("Hello.").request["messages"] == [{"role": "user", "content": "Hello."}]


def test_the_offline_line_of_the_readme_sends_to_the_emulator(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    assert chat.send("My name is Ada.").text
    assert "Ada" in chat.send("What is my name?").text
