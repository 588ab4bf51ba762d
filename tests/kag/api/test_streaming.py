"""ThreadStream: a blocking iterator consumed from async code; the slot it holds is released
before the consumer sees the end, whatever the end was."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from kag.api.streaming import ThreadStream


def _consume(make: callable, rounds: int) -> list[tuple[list[int], int, str]]:  # type: ignore[valid-type]
    async def main() -> list[tuple[list[int], int, str]]:
        seen = []
        for _ in range(rounds):
            released = []
            stream = ThreadStream(make, on_done=lambda released=released: released.append(1))
            items, end = [], "done"
            try:
                async for item in stream:
                    items.append(item)
            except ValueError:
                end = "error"
            # the end was seen: the slot must already be free (the API answers right after this)
            seen.append((items, len(released), end))
        return seen

    return asyncio.run(main())


def test_the_slot_is_released_before_the_consumer_sees_the_end() -> None:
    # a busy thread competing for the GIL widens any window between "done" and the release
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    try:
        results = _consume(lambda: iter(range(3)), rounds=300)
    finally:
        stop.set()
    assert all(items == [0, 1, 2] and released == 1 and end == "done" for items, released, end in results)


def test_an_error_is_raised_to_the_consumer_after_the_release() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("the model failed")

    results = _consume(failing, rounds=50)
    assert all(items == [1] and released == 1 and end == "error" for items, released, end in results)


def test_a_failing_release_still_ends_the_stream() -> None:
    async def main() -> list[int]:
        def boom() -> None:
            raise RuntimeError("release failed")

        stream = ThreadStream(lambda: iter([7]), on_done=boom)
        return [item async for item in stream]

    # the loop's exception handler reports the callback's error; the consumer still gets its items
    # and its end instead of waiting forever
    assert asyncio.run(asyncio.wait_for(main(), 10)) == [7]
