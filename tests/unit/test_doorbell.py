"""The same-host doorbell: real abstract Unix sockets (Linux)."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from rayinfra import doorbell


def name() -> str:
    return doorbell.address(Path(f"/tmp/{uuid.uuid4().hex}/state.db"), "test")


def test_address_is_abstract_and_stable_per_store(tmp_path: Path) -> None:
    a = doorbell.address(tmp_path / "state.db", "scheduler")
    assert a.startswith("\0rayinfra-doorbell-scheduler-")
    assert a == doorbell.address(tmp_path / "." / "state.db", "scheduler")
    assert a != doorbell.address(tmp_path / "other.db", "scheduler")
    assert a != doorbell.address(tmp_path / "state.db", "gateway")


def test_rings_arrive_and_drain_together() -> None:
    n = name()
    rx = doorbell.open_receiver(n)
    assert rx is not None
    bell = doorbell.Bell(n)
    try:
        assert doorbell.drain(rx) == 0
        assert bell.ring() and bell.ring() and bell.ring()
        assert doorbell.drain(rx) == 3
        assert doorbell.drain(rx) == 0
    finally:
        bell.close()
        rx.close()


def test_ring_without_receiver_says_so_and_a_full_queue_still_counts_as_rung() -> None:
    n = name()
    bell = doorbell.Bell(n)
    assert bell.ring() is False  # nobody bound: the caller falls back
    rx = doorbell.open_receiver(n)
    assert rx is not None
    try:
        rung = [bell.ring() for _ in range(5000)]  # far past the receiver's queue
        assert all(rung)
        assert 0 < doorbell.drain(rx) < 5000
    finally:
        bell.close()
        rx.close()
    assert doorbell.Bell(n).ring() is False  # the name is free again once closed


def test_one_receiver_per_name() -> None:
    n = name()
    rx = doorbell.open_receiver(n)
    try:
        with pytest.raises(OSError):
            doorbell.open_receiver(n)
    finally:
        assert rx is not None
        rx.close()
    again = doorbell.open_receiver(n)
    assert isinstance(again, socket.socket)
    again.close()


async def test_receiver_calls_back_per_batch_of_rings_and_binds_once_the_name_is_free() -> None:
    import asyncio

    n = name()
    squatter = doorbell.open_receiver(n)  # a previous incarnation still holds the name
    rang: list[int] = []
    rx = doorbell.Receiver(n, lambda: rang.append(1))
    bell = doorbell.Bell(n)
    try:
        assert bell.ring()  # the squatter gets it, not rx
        await asyncio.sleep(0.05)
        assert rang == []
        squatter.close()
        rx.bind()
        assert bell.ring() and bell.ring()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if rang:
                break
        assert rang == [1]  # two rings, one wake-up
    finally:
        bell.close()
        rx.close()
    assert doorbell.Bell(n).ring() is False
