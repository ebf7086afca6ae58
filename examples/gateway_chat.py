"""A multi-turn chat with the official Python SDK, through the turnkeep gateway; each turn sends only its new message.

Against a running gateway (`turnkeep serve`), with a key from `turnkeep keys create --tenant me`:

    ANTHROPIC_BASE_URL=http://127.0.0.1:8788 ANTHROPIC_API_KEY=tk-... python examples/gateway_chat.py

Without ANTHROPIC_BASE_URL it starts a gateway of its own, with the offline emulator upstream, in a temporary
directory, so it runs anywhere.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import anthropic

MODEL = os.environ.get("TURNKEEP_MODEL", "claude-sonnet-5")


def chat(client: anthropic.Anthropic) -> None:
    thread = client.beta.messages.thread(model=MODEL, max_tokens=300, system="You are a concise assistant.")
    for question in ("My name is Ada and I live in Paris.", "What is my name?", "Where do I live?"):
        reply = thread.send({"role": "user", "content": question})
        print(f"> {question}")
        print("".join(block.text for block in reply.content if block.type == "text"))
    print("> What is my name? (streamed)")
    with thread.stream({"role": "user", "content": "What is my name?"}) as stream:
        for piece in stream.text_stream:
            print(piece, end="", flush=True)
    print()


def main() -> None:
    if os.environ.get("ANTHROPIC_BASE_URL"):
        with anthropic.Anthropic() as client:
            chat(client)
        return
    from turnkeep.server import GatewayServer

    with tempfile.TemporaryDirectory() as home, GatewayServer(database=Path(home) / "gateway.db") as server:
        key = server.create_key("example")
        with anthropic.Anthropic(api_key=key, base_url=server.base_url) as client:
            chat(client)


if __name__ == "__main__":
    main()
