"""app.kafka.AsyncProducer at its edges: a send waiting on a dead broker when the producer closes."""

from __future__ import annotations

import asyncio

import pytest

from app import devstack
from app.kafka import AsyncProducer, BrokerUnavailable
from tests.support.stack import Stack


async def test_close_fails_a_send_still_waiting_instead_of_leaving_it_hanging(stack: Stack) -> None:
    settings = stack.settings(kafka_bootstrap=f"127.0.0.1:{devstack.free_port()}")  # nobody listens
    producer = AsyncProducer(settings, **{"message.timeout.ms": 60_000})
    send = asyncio.create_task(producer.send("memory.events", b"{}", b"t"))
    await asyncio.sleep(0)  # let it produce into the local queue
    await asyncio.to_thread(producer.close, 0.2)
    with pytest.raises(BrokerUnavailable, match="closed"):
        await asyncio.wait_for(send, 5)
    with pytest.raises(BrokerUnavailable, match="closed"):
        await producer.send("memory.events", b"{}", b"t")  # and a send after close fails at once
