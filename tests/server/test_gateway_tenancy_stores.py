"""The gateway's tenancy store behaves the same on SQLite and on PostgreSQL; on PostgreSQL, two stores on one
database (two replicas) share keys, leases, budgets and rate-limit counters."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from turnkeep.errors import StorageError, UsageError
from turnkeep.server.pgtenancy import GATEWAY_MIGRATIONS, PostgresTenancy
from turnkeep.server.tenancy import Limits, SQLiteTenancy, TenancyStore, Tenant, ThreadRow, new_key, open_tenancy

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TenancyStore]]:
    """Opens a tenancy store on one shared database (call it twice for two replicas)."""
    location: str | Path = (
        request.getfixturevalue("postgres_url") if request.param == "postgres" else tmp_path / "gateway.db"
    )
    opened: list[TenancyStore] = []

    def open_one() -> TenancyStore:
        store = open_tenancy(location)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def test_open_tenancy_picks_the_backend_by_location(opener: Callable[[], TenancyStore]) -> None:
    assert isinstance(opener(), SQLiteTenancy | PostgresTenancy)


def test_keys_are_found_by_their_digest_and_revoked_by_prefix(opener: Callable[[], TenancyStore]) -> None:
    tenancy = opener()
    tenancy.put_tenant(Tenant("acme", Limits(usd_per_day=Decimal("5")), "window:4"))
    key = new_key()
    info = tenancy.add_key("acme", key, now=NOW)
    assert key not in repr(tenancy.keys())
    assert tenancy.tenant_for_key(key) == Tenant("acme", Limits(usd_per_day=Decimal("5")), "window:4")
    assert tenancy.tenant_for_key(key + "x") is None
    assert tenancy.revoke_key(info.prefix, now=NOW + 1) == 1
    assert tenancy.tenant_for_key(key) is None
    assert [k.revoked for k in tenancy.keys("acme")] == [True]


def test_a_key_for_an_unknown_tenant_or_a_short_prefix_is_refused(opener: Callable[[], TenancyStore]) -> None:
    tenancy = opener()
    with pytest.raises(UsageError, match="no tenant named 'ghost'"):
        tenancy.add_key("ghost", new_key(), now=NOW)
    with pytest.raises(UsageError, match="prefix"):
        tenancy.revoke_key("tk-", now=NOW)
    with pytest.raises(UsageError, match="non-empty name"):
        tenancy.put_tenant(Tenant(" "))


def test_a_revoke_prefix_is_literal_not_a_pattern(opener: Callable[[], TenancyStore]) -> None:
    tenancy = opener()
    tenancy.put_tenant(Tenant("acme"))
    tenancy.add_key("acme", new_key(), now=NOW)
    assert tenancy.revoke_key("tk-%%%%", now=NOW) == 0
    assert tenancy.revoke_key("tk-____", now=NOW) == 0


def test_rows_are_scoped_by_tenant(opener: Callable[[], TenancyStore]) -> None:
    tenancy = opener()
    for index in range(3):
        tenancy.claim_conversation("acme", f"conv_{index}", now=NOW + index)
    tenancy.claim_conversation("globex", "conv_g", now=NOW)
    tenancy.record_thread("acme", ThreadRow("msg_1", "conv_0", "node_1", {"model": "m"}), now=NOW)
    assert tenancy.owns("acme", "conv_0")
    assert not tenancy.owns("globex", "conv_0")
    assert tenancy.thread("globex", "msg_1") is None
    assert tenancy.thread("acme", "msg_1") == ThreadRow("msg_1", "conv_0", "node_1", {"model": "m"})
    assert tenancy.conversations("acme", 2, 0) == (["conv_2", "conv_1"], 3)
    assert tenancy.conversations("acme", 2, 2) == (["conv_0"], 3)
    tenancy.forget_conversation("globex", "conv_0")  # another tenant's: nothing happens
    assert tenancy.owns("acme", "conv_0")
    tenancy.forget_conversation("acme", "conv_0")
    assert not tenancy.owns("acme", "conv_0")
    assert tenancy.thread("acme", "msg_1") is None


def test_a_lease_is_held_by_one_replica_until_released_or_expired(opener: Callable[[], TenancyStore]) -> None:
    first, second = opener(), opener()
    first.claim_conversation("acme", "conv", now=NOW)
    assert first.acquire_lease("acme", "conv", "one", now=NOW, seconds=10)
    assert not second.acquire_lease("acme", "conv", "two", now=NOW + 5, seconds=10)
    assert not second.acquire_lease("globex", "conv", "two", now=NOW + 50, seconds=10)  # not its conversation
    second.release_lease("conv", "two")  # not its lease: nothing happens
    assert not second.acquire_lease("acme", "conv", "two", now=NOW + 5, seconds=10)
    assert first.renew_lease("conv", "one", now=NOW + 9, seconds=10)
    assert not second.acquire_lease("acme", "conv", "two", now=NOW + 15, seconds=10)
    assert second.acquire_lease("acme", "conv", "two", now=NOW + 19, seconds=10)  # the first one's expired
    assert not first.renew_lease("conv", "one", now=NOW + 20, seconds=10)  # and it knows it lost it
    second.release_lease("conv", "two")
    assert first.acquire_lease("acme", "conv", "three", now=NOW + 20, seconds=10)


def test_of_many_replicas_racing_for_one_lease_exactly_one_wins(opener: Callable[[], TenancyStore]) -> None:
    replicas = [opener() for _ in range(4)]
    replicas[0].claim_conversation("acme", "conv", now=NOW)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        won = list(
            pool.map(lambda i: replicas[i % 4].acquire_lease("acme", "conv", f"t{i}", now=NOW, seconds=60), range(16))
        )
    assert won.count(True) == 1


def test_usage_from_every_replica_adds_up_and_limits_hold_for_the_sum(opener: Callable[[], TenancyStore]) -> None:
    replicas = [opener(), opener()]

    def spend(index: int) -> None:
        replicas[index % 2].record_usage(
            "acme", "claude-sonnet-5", input_tokens=10, output_tokens=5, usd=Decimal("0.001"), now=NOW
        )

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(spend, range(40)))
    for replica in replicas:
        totals = replica.usage("acme", since=NOW - 3600, until=NOW)
        assert (totals.requests, totals.input_tokens, totals.output_tokens, totals.usd) == (
            40,
            400,
            200,
            Decimal("0.040"),
        )
        assert replica.admit("acme", Limits(requests_per_minute=41), now=NOW) is None
        assert replica.admit("acme", Limits(requests_per_minute=40), now=NOW) == "requests"
        assert replica.admit("acme", Limits(tokens_per_minute=600), now=NOW) == "tokens"
        assert replica.admit("acme", Limits(requests_per_minute=40), now=NOW + 60) is None  # a new minute
    assert replicas[0].usage("globex", since=NOW, until=NOW).requests == 0


def test_postgres_tables_are_versioned_and_migrated_once(postgres_url: str) -> None:
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        stores = list(pool.map(lambda _: PostgresTenancy(postgres_url), range(3)))
    for store in stores:
        store.close()
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute("SELECT version FROM turnkeep.gateway_schema_version").fetchall()
        assert rows == [(len(GATEWAY_MIGRATIONS),)]
        connection.execute("UPDATE turnkeep.gateway_schema_version SET version = 99")
    with pytest.raises(StorageError, match="version 99; this turnkeep knows up to 1: upgrade turnkeep"):
        PostgresTenancy(postgres_url)


def test_an_unreachable_postgres_names_the_server_not_the_password(tmp_path: Path) -> None:
    url = f"postgresql://ada:s3cret@/nowhere?host={tmp_path}&port=5999"
    with pytest.raises(StorageError, match="cannot connect to PostgreSQL at") as caught:
        PostgresTenancy(url, timeout=1)
    assert "s3cret" not in str(caught.value)
