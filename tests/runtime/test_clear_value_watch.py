"""Which workers of a running gateway watch for a finished sealing pass, and that each then
refuses values in clear (gateway/server.py, data_rotation.refuse_clear_values_once_a_pass_finishes):
every worker started before a pass had finished, the first one too when its own start-up
pass does not finish."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest

from gateway import server
from gateway.runtime.processes import WORKER_INDEX_ENV
from gateway.server import Gateway
from gateway.services import data_rotation
from gateway.store.base import StoreUnavailable
from tests.store.test_sealing_attacks import refused_once_a_pass_finishes

ENCRYPTED = "[encryption]\nenabled = true\n"

StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture(autouse=True)
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "refuse_clear_values_once_a_pass_finishes", functools.partial(
        data_rotation.refuse_clear_values_once_a_pass_finishes, interval_s=0.02))


async def refused_once_a_pass_finishes_beside(gateway: Gateway) -> None:
    watch = gateway._pass_watch_task
    assert watch is not None
    await refused_once_a_pass_finishes(gateway.services, watch)


async def test_a_second_worker_refuses_once_a_pass_finishes_and_stop_ends_its_watch(
    gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")
    gateway = await gateway_factory(ENCRYPTED)
    assert gateway._reseal_task is None
    watch = gateway._pass_watch_task
    assert watch is not None
    await gateway.reload()
    assert gateway._pass_watch_task is watch and not watch.done()
    await refused_once_a_pass_finishes_beside(gateway)


async def test_a_running_watch_is_cancelled_by_stop(
    gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")
    gateway = await gateway_factory(ENCRYPTED)
    watch = gateway._pass_watch_task
    assert watch is not None
    await gateway.stop()
    assert watch.cancelled()


async def test_a_first_worker_whose_own_pass_failed_refuses_once_another_finishes(
    gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def not_answering(*_: object, **__: object) -> None:
        raise StoreUnavailable("store is not answering")

    real_pass = data_rotation.reseal_store
    monkeypatch.setattr(data_rotation, "reseal_store", not_answering)
    monkeypatch.setenv(WORKER_INDEX_ENV, "0")
    gateway = await gateway_factory(ENCRYPTED)
    assert gateway._reseal_task is not None
    await gateway._reseal_task
    monkeypatch.setattr(data_rotation, "reseal_store", real_pass)
    await refused_once_a_pass_finishes_beside(gateway)


async def test_without_encryption_no_worker_watches(
    gateway_factory: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_INDEX_ENV, "1")
    gateway = await gateway_factory("[encryption]\nenabled = false\n")
    assert gateway._pass_watch_task is None
