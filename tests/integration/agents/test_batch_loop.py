"""The batch-consumer loop (agents/loop.py) against the real broker: commits follow writes, a
failing write is retried in place, a stop during retries leaves the batch to be redelivered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from agents.loop import BatchLoop, Item, LoopConfig
from app import metrics
from app.kafka import committed_offsets, publish_sync
from app.settings import Settings

PARTITIONS = 2


class Recorder:
    """A handler that records what it is asked to write; `fail` decides whether an attempt raises."""

    name = "test"
    dependencies = ("testdep",)

    def __init__(self, fail: Callable[[int], bool] = lambda attempt: False) -> None:
        self.fail = fail
        self.attempts: list[list[tuple[int, int]]] = []  # (partition, offset) per attempted batch
        self.written: list[tuple[int, int]] = []
        self.gate: Callable[[], Awaitable[None]] | None = None
        self.closed = False

    def prepare(self, items: list[Item]) -> list[tuple[int, int]]:
        return [(i.partition, i.offset) for i in items]

    async def write(self, batch: list[tuple[int, int]]) -> None:
        self.attempts.append(batch)
        if self.gate is not None:
            await self.gate()
        if self.fail(len(self.attempts)):
            raise ConnectionError("dependency down")
        self.written.extend(batch)

    def dependency(self, exc: BaseException) -> str | None:
        return "testdep" if isinstance(exc, ConnectionError) else None

    def close(self) -> None:
        self.closed = True


def new_topic(settings: Settings) -> str:
    name = f"loop-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(settings.kafka_client_config())
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(10)
    return name


def make_loop(
    settings: Settings, topic: str, group: str, handler: Recorder, max_messages: int = 10_000
) -> BatchLoop[list[tuple[int, int]]]:
    config = LoopConfig(
        topics=(topic,),
        group=group,
        max_messages=max_messages,
        within_s=0.05,
        fetch_wait_ms=10,
        retry_initial_s=0.05,
        retry_max_s=0.2,
        stop_timeout_s=10,
    )
    return BatchLoop(settings, config, handler)


def publish_n(settings: Settings, topic: str, n: int) -> dict[int, int]:
    return publish_sync(settings, [(str(i).encode(), f"v{i}".encode()) for i in range(n)], topic)


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    return committed_offsets(settings, group, topic)


async def stop(loop: BatchLoop[list[tuple[int, int]]], task: asyncio.Task[None]) -> None:
    loop.stop()
    await asyncio.wait_for(task, 20)


async def until(predicate: Callable[[], object], timeout_s: float = 30.0) -> None:
    """Poll without blocking the event loop the loop under test runs on."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        for task in asyncio.all_tasks():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError("the loop failed") from task.exception()
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_offsets_are_committed_only_after_the_write(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    ends = publish_n(settings, topic, 3000)
    release = asyncio.Event()
    handler = Recorder()

    async def gate() -> None:
        await release.wait()

    handler.gate = gate
    loop = make_loop(settings, topic, group, handler, max_messages=500)
    task = asyncio.ensure_future(loop.run())
    try:
        # The first batch's write is held while the next batch is consumed and prepared: the
        # consumer went round (and committed what was written: nothing) at least once more.
        await until(lambda: handler.attempts and loop._inflight.count >= 2)
        done = await asyncio.to_thread(committed, settings, group, topic)
        assert all(o < 0 for o in done.values()), done
        release.set()
        await until(lambda: len(handler.written) == 3000)
        await until(lambda: committed(settings, group, topic) == ends)
    finally:
        release.set()
        await stop(loop, task)
    assert sorted(handler.written) == sorted((p, o) for p, end in ends.items() for o in range(end))
    assert handler.closed


async def test_a_failing_write_is_retried_in_place_then_committed(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    retries_before = metrics.DEPENDENCY_RETRIES.labels("testdep")._value.get()
    handler = Recorder(fail=lambda attempt: attempt <= 3)
    loop = make_loop(settings, topic, group, handler)
    ends = publish_n(settings, topic, 500)
    task = asyncio.ensure_future(loop.run())
    try:
        await until(lambda: len(handler.written) == 500)
        await until(lambda: committed(settings, group, topic) == ends)
    finally:
        await stop(loop, task)
    # The first batch was attempted four times, unchanged, and nothing after it ran in between.
    first = handler.attempts[0]
    assert handler.attempts[:4] == [first] * 4
    assert handler.written[: len(first)] == first
    assert len(handler.written) == len(set(handler.written)) == 500
    assert metrics.DEPENDENCY_RETRIES.labels("testdep")._value.get() - retries_before == 3
    assert metrics.DEPENDENCY_UP.labels("testdep")._value.get() == 1


async def test_a_stop_during_retries_leaves_the_batch_uncommitted_and_it_is_redelivered(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    ends = publish_n(settings, topic, 200)
    down = Recorder(fail=lambda attempt: True)
    loop = make_loop(settings, topic, group, down)
    task = asyncio.ensure_future(loop.run())
    await until(lambda: len(down.attempts) >= 3)
    assert metrics.DEPENDENCY_UP.labels("testdep")._value.get() == 0
    await stop(loop, task)  # returns normally: a stop is not a crash
    assert down.written == []
    done = await asyncio.to_thread(committed, settings, group, topic)
    assert all(o < 0 for o in done.values()), done

    up = Recorder()
    loop = make_loop(settings, topic, group, up)
    task = asyncio.ensure_future(loop.run())
    try:
        await until(lambda: len(up.written) == 200)
        await until(lambda: committed(settings, group, topic) == ends)
    finally:
        await stop(loop, task)
    assert set(down.attempts[0]) <= set(up.written)
    assert sorted(up.written) == sorted((p, o) for p, end in ends.items() for o in range(end))


async def test_a_write_that_fails_with_a_bug_stops_the_loop_with_the_batch_uncommitted(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    publish_n(settings, topic, 50)

    class Buggy(Recorder):
        async def write(self, batch: list[tuple[int, int]]) -> None:
            self.attempts.append(batch)
            raise KeyError("bug")

    handler = Buggy()
    loop = make_loop(settings, topic, group, handler)
    task = asyncio.ensure_future(loop.run())
    done, _ = await asyncio.wait([task], timeout=20)
    assert done, "the loop kept running after a bug"
    assert isinstance(task.exception(), KeyError)
    assert len(handler.attempts) == 1  # not retried
    offsets = await asyncio.to_thread(committed, settings, group, topic)
    assert all(o < 0 for o in offsets.values()), offsets


class Finisher(Recorder):
    """A handler whose write returns `finish`: the batch counts as written once that returns."""

    def __init__(self, fail_finish: Callable[[int], bool] = lambda attempt: False) -> None:
        super().__init__()
        self.fail_finish = fail_finish
        self.finish_attempts: list[list[tuple[int, int]]] = []
        self.finished: list[list[tuple[int, int]]] = []
        self.finish_gate: Callable[[], Awaitable[None]] | None = None

    async def write(self, batch: list[tuple[int, int]]) -> Callable[[], Awaitable[None]]:  # type: ignore[override]
        await super().write(batch)

        async def finish() -> None:
            self.finish_attempts.append(batch)
            if self.finish_gate is not None:
                await self.finish_gate()
            if self.fail_finish(len(self.finish_attempts)):
                raise ConnectionError("dependency down")
            self.finished.append(batch)

        return finish


async def test_a_batch_is_committed_after_its_finish_which_overlaps_the_next_write(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    ends = publish_n(settings, topic, 3000)
    release = asyncio.Event()
    handler = Finisher()

    async def gate() -> None:
        await release.wait()

    handler.finish_gate = gate
    loop = make_loop(settings, topic, group, handler, max_messages=500)
    task = asyncio.ensure_future(loop.run())
    try:
        # The first batch's finish is held: the next batch is written meanwhile, but not finished,
        # and nothing is committed.
        await until(lambda: len(handler.attempts) >= 2)
        assert handler.finish_attempts == handler.attempts[:1]
        assert handler.finished == []
        done = await asyncio.to_thread(committed, settings, group, topic)
        assert all(o < 0 for o in done.values()), done
        release.set()
        await until(lambda: sum(map(len, handler.finished)) == 3000)
        await until(lambda: committed(settings, group, topic) == ends)
    finally:
        release.set()
        await stop(loop, task)
    assert handler.finished == handler.attempts  # every batch finished once, in the order written


async def test_a_failing_finish_is_retried_in_place_before_the_next_finish(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    ends = publish_n(settings, topic, 3000)
    handler = Finisher(fail_finish=lambda attempt: attempt <= 3)
    loop = make_loop(settings, topic, group, handler, max_messages=500)
    task = asyncio.ensure_future(loop.run())
    try:
        await until(lambda: sum(map(len, handler.finished)) == 3000)
        await until(lambda: committed(settings, group, topic) == ends)
    finally:
        await stop(loop, task)
    first = handler.attempts[0]
    assert handler.finish_attempts[:4] == [first] * 4  # nothing finished in between
    assert handler.finished == handler.attempts
    assert metrics.DEPENDENCY_UP.labels("testdep")._value.get() == 1


async def test_a_stop_while_a_finish_is_retried_leaves_its_batch_uncommitted(settings: Settings) -> None:
    topic, group = new_topic(settings), f"g-{uuid.uuid4().hex[:8]}"
    publish_n(settings, topic, 200)
    handler = Finisher(fail_finish=lambda attempt: True)
    loop = make_loop(settings, topic, group, handler)
    task = asyncio.ensure_future(loop.run())
    await until(lambda: len(handler.finish_attempts) >= 3)
    await stop(loop, task)
    assert handler.finished == []
    done = await asyncio.to_thread(committed, settings, group, topic)
    assert all(o < 0 for o in done.values()), done
