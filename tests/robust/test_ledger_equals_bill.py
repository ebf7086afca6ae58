"""The ledger equals the bill: every HTTP attempt that may have been billed is in the ledger, exactly when its
usage arrived, marked `estimated` when it could not, and an attempt the API answered with an error costs nothing.

The fault matrix (tests/robust/ledger_matrix.py) runs each fault × streamed or not × sync or async × the SDK's
retries on or off, and a caller interrupting a stream (break, an exception, Ctrl-C) at several points, each on
its own API key against the emulator's bill. `make test` runs a seeded sample of the cells; the `thorough`
Hypothesis profile (`make test-thorough`) runs them all. The totals are printed (`pytest -s`) and recorded in
docs/benchmarks.md.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ledger_matrix import (
    CLIENT_TIMEOUT,
    FIRST,
    MODEL,
    SECOND,
    SLOW_SECONDS,
    Cell,
    Outcome,
    Totals,
    every_cell,
    retry_pending_turn,
    run_cell,
    wait_idle,
)

from turnkeep import Conversation
from turnkeep.core.catalog import default_catalog
from turnkeep.core.pricing import token_counts
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ConflictError
from turnkeep.export import export_json, import_json
from turnkeep.store import LedgerEntry, SQLiteStore

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
SAMPLE, SEED = 14, 20261203
MAX_TOKENS = 1024


def _span(entry: LedgerEntry) -> Decimal:
    """How far an estimated entry can be from the truth: its output anywhere from nothing to `max_tokens`, and
    its input anywhere from all cache reads to all 1-hour cache writes (the dearest input)."""
    counts = token_counts(entry.usage)
    prices = default_catalog().get(entry.model).prices_for(counts.total_input)
    output = max(MAX_TOKENS, counts.output) * prices.output
    inputs = counts.total_input * (prices.cache_write_1h - prices.cache_read)
    return (output + inputs) / 1_000_000


def check(outcome: Outcome) -> None:
    """Exact when nothing was estimated; otherwise off by no more than the estimates can be; and one priced
    entry per billed request (an error status is in the ledger at $0, never missing, never priced)."""
    ledger = outcome.ledger
    priced = [entry for entry in ledger if Decimal(entry.cost_usd) > 0]
    assert len(priced) == outcome.billed_requests, outcome.cell
    for entry in ledger:
        if Decimal(entry.cost_usd) == 0:
            assert "not billed" in (entry.error or ""), (outcome.cell, entry)
    estimated = [entry for entry in ledger if entry.estimated]
    if not estimated:
        assert outcome.difference == 0, outcome.cell
    else:
        assert abs(outcome.difference) <= sum((_span(entry) for entry in estimated), Decimal(0)), outcome.cell


def cells() -> list[Cell]:
    every = every_cell()
    return every if THOROUGH else random.Random(SEED).sample(every, SAMPLE)


def test_the_ledger_equals_the_bill_under_every_fault(turnkeep_emulator: EmulatorServer) -> None:
    totals = Totals()
    for cell in cells():
        outcome = run_cell(turnkeep_emulator, cell)
        check(outcome)
        totals.add(outcome)
    print(f"\nfault matrix ({'every cell' if THOROUGH else f'{SAMPLE} cells, seed {SEED}'}):\n{totals.table()}")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_an_interrupted_stream_records_what_it_saw(turnkeep_emulator: EmulatorServer, asynchronous: bool) -> None:
    outcome = run_cell(turnkeep_emulator, Cell(None, True, asynchronous, False, "keyboard", 2))
    check(outcome)
    interrupted = outcome.ledger[1]
    # The request was paid: its input is the API's own (message_start), not $0.
    assert Decimal(interrupted.cost_usd) > 0
    assert token_counts(interrupted.usage).total_input == token_counts(outcome.ledger[2].usage).total_input


@pytest.mark.parametrize("streamed", [False, True])
def test_the_sdks_own_retries_are_each_in_the_ledger(turnkeep_emulator: EmulatorServer, streamed: bool) -> None:
    client = turnkeep_emulator.client(api_key="retried", max_retries=2)
    chat = Conversation(MODEL, client=client, max_tokens=MAX_TOKENS)
    turnkeep_emulator.fault({"status": 529, "retry_after": 0.001}, "429", api_key="retried")
    if streamed:
        with chat.stream(FIRST) as stream:
            stream.until_done()
    else:
        chat.send(FIRST)
    overloaded, limited, answered = chat.ledger
    assert (overloaded.cost_usd, limited.cost_usd) == ("0", "0")
    assert overloaded.error is not None
    assert "529" in overloaded.error
    assert "not billed" in overloaded.error
    assert limited.error is not None
    assert "429" in limited.error
    assert answered.error is None
    assert answered.request_id is not None
    assert Decimal(answered.cost_usd) == Decimal(turnkeep_emulator.bill(api_key="retried")["usd"]["total"])


def test_a_timed_out_attempt_the_sdk_retried_is_priced_from_its_answered_twin(
    turnkeep_emulator: EmulatorServer,
) -> None:
    # The retry has three seconds to answer: only the slow first attempt times out, on a busy machine too.
    client = turnkeep_emulator.client(api_key="slow", max_retries=1, timeout=CLIENT_TIMEOUT)
    chat = Conversation(MODEL, client=client, max_tokens=MAX_TOKENS)
    turnkeep_emulator.fault(f"slow:{SLOW_SECONDS}", api_key="slow")
    chat.send(FIRST)
    wait_idle(turnkeep_emulator)
    lost, answered = chat.ledger
    assert lost.estimated
    assert not answered.estimated
    assert lost.error is not None
    assert "usage estimated" in lost.error
    # Same body: the same input total and the same reply; only the cache split is the forecast's.
    assert token_counts(lost.usage).total_input == token_counts(answered.usage).total_input
    assert token_counts(lost.usage).output == token_counts(answered.usage).output
    billed = Decimal(turnkeep_emulator.bill(api_key="slow")["usd"]["total"])
    assert sum(Decimal(e.cost_usd) for e in chat.ledger) == billed


def test_the_estimated_mark_survives_the_store_and_an_export(turnkeep_emulator: EmulatorServer, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    client = turnkeep_emulator.client(api_key="kept", max_retries=0)
    chat = Conversation(MODEL, client=client, store=store, max_tokens=MAX_TOKENS)
    turnkeep_emulator.fault("truncate", api_key="kept")
    with pytest.raises(Exception, match="mid-response"):
        chat.send(FIRST)
    chat.retry()
    assert [e.estimated for e in store.ledger(chat.id)] == [True, False]
    copy = import_json(store, export_json(store, chat.id))
    assert store.ledger(copy) == store.ledger(chat.id)


class _Held(httpx2.HTTPTransport):
    """A real transport that holds each response until `release` is set: the request is answered (and billed)
    while its writer waits, so another writer can commit first."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__()
        self.release = release

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        self.release.wait(timeout=120)
        return response


@pytest.mark.parametrize("cut", [False, True], ids=["whole reply", "stream cut"])
def test_a_request_paid_by_a_writer_that_lost_the_race_stays_in_the_ledger(
    turnkeep_emulator: EmulatorServer, tmp_path: Path, cut: bool
) -> None:
    """Writer A sends a turn; while its request is in flight, writer B in another process retries A's pending
    turn and commits first. A's request was paid: it is recorded all the same,
    whether its reply then arrives whole or its stream is cut."""
    path = tmp_path / "shared.db"
    released = threading.Event()
    held = turnkeep_emulator.client(api_key="race", max_retries=0, http_client=httpx2.Client(transport=_Held(released)))
    first = Conversation(MODEL, client=held, store=SQLiteStore(path), max_tokens=MAX_TOKENS)
    released.set()
    first.send("My name is Ada.")
    released.clear()
    failures: list[BaseException] = []

    if cut:
        turnkeep_emulator.fault({"kind": "drop", "after": 6}, api_key="race")

    def send() -> None:
        try:
            if cut:
                with first.stream(SECOND) as stream:
                    stream.until_done()
            else:
                first.send(SECOND)
        except BaseException as err:
            failures.append(err)

    writer = threading.Thread(target=send)
    writer.start()
    deadline = time.monotonic() + 120
    while turnkeep_emulator.bill(api_key="race")["requests"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # A's request has been answered and billed; its response is held
    other = multiprocessing.get_context("spawn").Process(
        target=retry_pending_turn, args=(str(path), turnkeep_emulator.base_url, "race", first.id)
    )
    try:
        other.start()
        other.join(timeout=300)
    finally:
        released.set()  # A's response arrives only now, after B committed
        writer.join()
    assert other.exitcode == 0
    assert len(failures) == 1
    assert isinstance(failures[0], ConflictError)
    ledger = SQLiteStore(path).ledger(first.id)
    assert len(ledger) == 3  # the first turn, A's paid request, B's
    assert sum(entry.estimated for entry in ledger) == int(cut)  # B committed first: A's entry comes last
    bill = turnkeep_emulator.bill(api_key="race")
    check(Outcome(Cell(None, cut, False, False), ledger, Decimal(bill["usd"]["total"]), int(bill["requests"])))


def test_async_and_sync_record_the_same_ledger_under_a_fault(turnkeep_emulator: EmulatorServer) -> None:
    cell = Cell({"kind": "drop", "after": 4}, True, False, False)
    sync = run_cell(turnkeep_emulator, cell)
    asynchronous = run_cell(turnkeep_emulator, Cell(cell.fault, True, True, False))
    assert [(e.cost_usd, e.estimated, dict(e.usage)) for e in sync.ledger] == [
        (e.cost_usd, e.estimated, dict(e.usage)) for e in asynchronous.ledger
    ]


def test_turnkeep_cost_shows_an_estimated_request_as_such(turnkeep_emulator: EmulatorServer) -> None:
    from rich.console import Console

    from turnkeep.cli.render import cost_data, cost_table

    outcome = run_cell(turnkeep_emulator, Cell({"kind": "drop", "after": 4}, True, False, False))
    data = cost_data("c", outcome.ledger)
    assert [row["estimated"] for row in data["requests"]] == [False, True, False]
    console = Console(width=120, record=True)
    console.print(cost_table(data))
    assert "reply (estimated)" in console.export_text()
