"""envd's stream deadline (`Connect-Timeout-Ms`, issue 13 item 5) without a server: the helper ends a stream
with DEADLINE_EXCEEDED when its time passes, and the header parses as E2B's envd reads it."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from sandhive.envd.requests import request_timeout
from sandhive.envd.streams import until_deadline


async def _ticks(closed: list[bool]):
    try:
        for i in range(1000):
            yield i
            await asyncio.sleep(0.05)
    finally:
        closed.append(True)


async def test_a_stream_ends_with_deadline_exceeded_and_closes_its_source() -> None:
    closed: list[bool] = []
    got = []
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        async for item in until_deadline(_ticks(closed), asyncio.get_running_loop().time() + 0.3):
            got.append(item)
    assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert 0.25 < time.monotonic() - started < 1.0 and 3 <= len(got) <= 7 and closed == [True]


async def test_without_a_deadline_the_stream_runs_to_its_end() -> None:
    async def three():
        for i in range(3):
            yield i

    assert [item async for item in until_deadline(three(), None)] == [0, 1, 2]


@pytest.mark.parametrize(("header", "seconds"), [(None, None), ("0", None), ("2000", 2.0), ("1", 0.001)])
def test_connect_timeout_ms_header(header: str | None, seconds: float | None) -> None:
    headers = {} if header is None else {"connect-timeout-ms": header}
    assert request_timeout(SimpleNamespace(request_headers=headers)) == seconds  # type: ignore[arg-type]


def test_a_malformed_timeout_is_invalid_argument() -> None:
    with pytest.raises(ConnectError) as caught:
        request_timeout(SimpleNamespace(request_headers={"connect-timeout-ms": "-5"}))  # type: ignore[arg-type]
    assert caught.value.code == Code.INVALID_ARGUMENT
