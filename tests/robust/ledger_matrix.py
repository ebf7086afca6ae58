"""The fault matrix: one conversation per cell, a fault on its second turn, then the ledger against the bill.

A cell is (fault, streamed, async, SDK retries) or a caller's interrupt of a stream. Each runs on its own API key,
so the emulator's bill for that key is the cell's bill. The turn that fails is retried until it commits, as a
user would, so every cell ends with a complete conversation and every attempt billed along the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic

from turnkeep import AsyncConversation, Conversation, TurnkeepError
from turnkeep.emulator import EmulatorServer
from turnkeep.store import LedgerEntry

MODEL = "claude-sonnet-4-6"
FIRST = "My name is Ada. " + "I keep notes about the boxes in the attic. " * 40
SECOND = "What is my name? " + "Box seven holds letters and old photographs. " * 70
# A slow reply outlasts the client's timeout by far; the timeout leaves the retry (which has no fault) three
# seconds to answer, about a hundred times what it takes, so a busy machine does not time it out too.
SLOW_SECONDS, CLIENT_TIMEOUT = 6.0, 3.0
# A stream's events: message_start, ping, content_block_start, deltas ...: cut before, at and after the text.
FAULTS: tuple[str | dict[str, Any], ...] = (
    {"status": 429, "retry_after": 0.001},
    {"status": 500, "retry_after": 0.001},
    {"status": 529, "retry_after": 0.001},
    f"slow:{SLOW_SECONDS}",
    "truncate",
    {"kind": "drop", "after": 0},
    {"kind": "drop", "after": 1},
    {"kind": "drop", "after": 5},
    {"kind": "sse_error", "after": 1},
    {"kind": "sse_error", "after": 5},
)
INTERRUPTS = ("break", "exception", "keyboard")


@dataclass(frozen=True)
class Cell:
    fault: str | dict[str, Any] | None
    streamed: bool
    asynchronous: bool
    retries: bool
    interrupt: str | None = None
    after_chunks: int = 0

    def __str__(self) -> str:
        what = self.fault if self.interrupt is None else f"{self.interrupt} after {self.after_chunks} chunks"
        mode = ("stream" if self.streamed else "create") + (" async" if self.asynchronous else " sync")
        return f"{what} · {mode} · SDK retries {'on' if self.retries else 'off'}"


def every_cell() -> list[Cell]:
    cells = [
        Cell(fault, streamed, asynchronous, retries)
        for fault in FAULTS
        for streamed in (False, True)
        for asynchronous in (False, True)
        for retries in (False, True)
    ]
    cells += [
        Cell(None, True, asynchronous, False, interrupt, after)
        for interrupt in INTERRUPTS
        for after in (0, 1, 3, 8)
        for asynchronous in (False, True)
    ]
    return cells


@dataclass
class Outcome:
    cell: Cell
    ledger: list[LedgerEntry]
    billed: Decimal
    billed_requests: int

    @property
    def recorded(self) -> Decimal:
        return sum((Decimal(e.cost_usd) for e in self.ledger), Decimal(0))

    @property
    def estimated(self) -> Decimal:
        return sum((Decimal(e.cost_usd) for e in self.ledger if e.estimated), Decimal(0))

    @property
    def difference(self) -> Decimal:
        return self.recorded - self.billed


@dataclass
class Totals:
    cells: int = 0
    requests: int = 0
    billed_requests: int = 0
    ledger_entries: int = 0
    estimated_entries: int = 0
    billed: Decimal = Decimal(0)
    recorded: Decimal = Decimal(0)
    estimated: Decimal = Decimal(0)
    worst: list[tuple[Decimal, str]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.cells += 1
        self.billed_requests += outcome.billed_requests
        self.ledger_entries += len(outcome.ledger)
        self.estimated_entries += sum(e.estimated for e in outcome.ledger)
        self.billed += outcome.billed
        self.recorded += outcome.recorded
        self.estimated += outcome.estimated
        if outcome.difference:
            self.worst.append((outcome.difference, str(outcome.cell)))

    def table(self) -> str:
        difference = self.recorded - self.billed
        share = difference / self.billed * 100 if self.billed else Decimal(0)
        rows = [
            f"cells {self.cells}; HTTP attempts in the ledger {self.ledger_entries} "
            f"({self.estimated_entries} estimated); requests billed {self.billed_requests}",
            f"billed ${self.billed:.6f}; ledger ${self.recorded:.6f} (estimated part ${self.estimated:.6f}); "
            f"difference ${difference:+.6f} ({share:+.2f}% of the bill; cells without an estimated entry: exact)",
        ]
        for difference_usd, cell in sorted(self.worst, key=lambda item: abs(item[0]), reverse=True)[:3]:
            rows.append(f"  largest estimate error ${difference_usd:+.6f}: {cell}")
        return "\n".join(rows)


def wait_idle(server: EmulatorServer) -> None:
    """Until the emulator has finished every request (a `slow` reply keeps its handler busy after a timeout)."""
    deadline = time.monotonic() + 120
    while server.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)


def _client_options(cell: Cell) -> dict[str, Any]:
    return {
        "max_retries": 2 if cell.retries else 0,
        "timeout": CLIENT_TIMEOUT if _slow(cell) else 30.0,
        # Echo: long replies, streamed in many deltas, the same for every attempt of a request.
        "default_headers": {"x-emulator-responder": "echo"},
    }


def _slow(cell: Cell) -> bool:
    return isinstance(cell.fault, str) and cell.fault.startswith("slow")


def run_cell(server: EmulatorServer, cell: Cell) -> Outcome:
    key = f"cell-{uuid.uuid4().hex[:12]}"
    ledger = asyncio.run(_run_async(server, cell, key)) if cell.asynchronous else _run_sync(server, cell, key)
    wait_idle(server)
    bill = server.bill(api_key=key)
    return Outcome(cell, ledger, Decimal(bill["usd"]["total"]), int(bill["requests"]))


def _interrupt(cell: Cell, chunks: int) -> None:
    if chunks < cell.after_chunks:
        return
    if cell.interrupt == "exception":
        raise ValueError("the caller's loop failed")
    if cell.interrupt == "keyboard":
        raise KeyboardInterrupt


def _run_sync(server: EmulatorServer, cell: Cell, key: str) -> list[LedgerEntry]:
    client = server.client(api_key=key, **_client_options(cell))
    chat = Conversation(MODEL, client=client, max_tokens=1024)
    chat.send(FIRST)
    if cell.fault is not None:
        server.fault(cell.fault, api_key=key)
    try:
        if not cell.streamed:
            chat.send(SECOND)
        elif cell.interrupt is None:
            with chat.stream(SECOND) as stream:
                for _ in stream:
                    pass
        else:
            with contextlib.suppress(ValueError, KeyboardInterrupt), chat.stream(SECOND) as stream:
                for chunks, _ in enumerate(stream):
                    _interrupt(cell, chunks)
                    if cell.interrupt == "break" and chunks >= cell.after_chunks:
                        break
    except (TurnkeepError, anthropic.APIError):
        pass
    while chat.pending:
        chat.retry()
    return chat.ledger


async def _run_async(server: EmulatorServer, cell: Cell, key: str) -> list[LedgerEntry]:
    client = server.async_client(api_key=key, **_client_options(cell))
    try:
        chat = AsyncConversation(MODEL, client=client, max_tokens=1024)
        await chat.send(FIRST)
        if cell.fault is not None:
            server.fault(cell.fault, api_key=key)
        try:
            if not cell.streamed:
                await chat.send(SECOND)
            elif cell.interrupt is None:
                async with chat.stream(SECOND) as stream:
                    async for _ in stream:
                        pass
            else:
                with contextlib.suppress(ValueError, KeyboardInterrupt):
                    async with chat.stream(SECOND) as stream:
                        chunks = 0
                        async for _ in stream:
                            _interrupt(cell, chunks)
                            if cell.interrupt == "break" and chunks >= cell.after_chunks:
                                break
                            chunks += 1
        except (TurnkeepError, anthropic.APIError):
            pass
        while chat.pending:
            await chat.retry()
        return chat.ledger
    finally:
        await client.close()


def retry_pending_turn(path: str, base_url: str, api_key: str, conversation_id: str) -> None:
    """Another process's writer: open the conversation from its SQLite file and retry its pending turn."""
    from turnkeep.store import SQLiteStore

    client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0)
    try:
        chat = Conversation.open(conversation_id, store=SQLiteStore(path), client=client)
        if not chat.pending:
            raise SystemExit("no pending turn to retry")
        chat.retry()
    finally:
        client.close()
