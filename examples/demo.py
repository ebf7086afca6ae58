"""`make demo`: a two-turn conversation that remembers a fact.

With ANTHROPIC_API_KEY set it talks to Claude; without one it starts turnkeep's offline emulator of the Messages
API on loopback and says so. Either way it shows that the second answer depends on the first turn, and what the
conversation cost.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import anthropic

from turnkeep import Conversation
from turnkeep.core.messages import text_of

MODEL = os.environ.get("TURNKEEP_MODEL", "claude-sonnet-4-6")


def main() -> int:
    with ExitStack() as stack:
        if os.environ.get("ANTHROPIC_API_KEY"):
            client = anthropic.Anthropic()
            print(f"Talking to Claude ({MODEL}).\n")
        else:
            from turnkeep.emulator import EmulatorServer

            server = stack.enter_context(EmulatorServer())
            client = server.client()
            print(f"No ANTHROPIC_API_KEY: replies come from turnkeep's offline emulator at {server.base_url}.\n")

        chat = Conversation(MODEL, client=client, system="You are a concise geography assistant.")
        for question in ("What is the capital of France?", "What is its population?"):
            reply = chat.send(question)
            print(
                f"you:    {question}\nclaude: {reply.text}\n        ({reply.usage.total_input} tokens in, "
                f"{reply.usage.output} out, ${reply.cost.total:.6f})\n"
            )

        # The same follow-up without the first turn: nothing tells the model what "its" means.
        fresh = Conversation(MODEL, client=client, system="You are a concise geography assistant.")
        print("A fresh conversation asked only the follow-up:")
        print(f"claude: {fresh.send('What is its population?').text}\n")

        print(f"Requests sent: {len(chat.ledger) + len(fresh.ledger)}; total ${chat.cost + fresh.cost:.6f}")
        print(f"The next request would carry these {len(chat.messages)} messages before its new question:")
        for message in chat.messages:
            print(f"  {message['role']:>9}: {text_of(message['content'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
