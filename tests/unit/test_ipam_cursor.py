"""IPAM's integer helpers and the per-subnet cursor the port create path claims from."""

from __future__ import annotations

import ipaddress
import threading

import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import IntegrityError, OperationalError

from astara.network import ipam
from astara.network.service import _lost_race


def test_int_pools_sorts_and_converts() -> None:
    pools = ipam.int_pools(
        [{"start": "10.0.0.9", "end": "10.0.0.10"}, {"start": "10.0.0.2", "end": "10.0.0.4"}]
    )
    assert pools == [(0x0A000002, 0x0A000004), (0x0A000009, 0x0A00000A)]


@pytest.mark.parametrize(
    "text", ["10.1.2.3", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::", "fd00:1:2:3::a"]
)
def test_address_text_is_the_canonical_text(text: str) -> None:
    address = ipaddress.ip_address(text)
    assert ipam.address_text(int(address), address.version) == str(address)
    assert ipam.address_int(text) == int(address)


def test_free_is_lazy_and_lowest_first() -> None:
    pools = [(1, 5), (10, 2**64)]  # a huge pool: never walked whole
    free = ipam.free(pools, {1, 2, 4, 10})
    assert [next(free) for _ in range(4)] == [3, 5, 11, 12]
    assert list(ipam.free([(1, 3)], {1, 2, 3})) == []


def test_a_cursor_is_unknown_until_restarted_then_hands_out_in_order_across_pools() -> None:
    pools = [(1, 3), (7, 8)]
    cursor = ipam.Cursor()
    assert cursor.claim(pools) is None  # a new process: read the subnet first
    cursor.restart(2)
    assert [cursor.claim(pools) for _ in range(4)] == [3, 7, 8, None]  # None: past the end
    cursor.restart(0)
    assert cursor.claim(pools) == 1


def test_a_cursor_skips_ahead() -> None:
    cursor = ipam.Cursor()
    cursor.skip(10)  # unknown: stays unknown
    assert cursor.claim([(1, 100)]) is None
    cursor.restart(5)
    cursor.skip(20)
    assert cursor.claim([(1, 100)]) == 26
    cursor.skip(100)
    assert cursor.claim([(1, 100)]) is None


def test_threads_never_claim_the_same_address() -> None:
    cursor = ipam.Cursor()
    cursor.restart(0)
    pools = [(1, 40_000)]
    claimed: list[int] = []

    def claim() -> None:
        mine = [cursor.claim(pools) for _ in range(5000)]
        claimed.extend(c for c in mine if c is not None)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(1, 40_001))


def _operational(sqlstate: type[Exception]) -> OperationalError:
    return OperationalError("INSERT …", {}, sqlstate("lost"))


def test_the_service_retries_lost_races_only() -> None:
    assert _lost_race(IntegrityError("INSERT …", {}, Exception("duplicate key")))
    assert _lost_race(_operational(pg_errors.DeadlockDetected))
    assert _lost_race(_operational(pg_errors.SerializationFailure))
    assert not _lost_race(_operational(pg_errors.QueryCanceled))
    assert not _lost_race(OperationalError("BEGIN IMMEDIATE", {}, Exception("disk I/O error")))
