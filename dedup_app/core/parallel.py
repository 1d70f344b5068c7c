"""A bounded, cancellable parallel map: decoding runs in threads while the model works on the previous batch."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, max_in_flight: int
) -> Generator[tuple[T, R | BaseException], None, None]:
    """Yield ``(item, fn(item))`` in completion order, with at most ``max_in_flight`` items submitted at once.

    Exceptions raised by ``fn`` are yielded in place of the result, never raised, so one bad item cannot stop the
    rest. Memory stays bounded by ``max_in_flight`` results. Closing the iterator early (the consumer was
    cancelled) drops the items not yet started; the ones running finish in the background.
    """
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")
    pending: dict[Future[R], T] = {}

    def fill() -> None:
        while len(pending) < max_in_flight:
            try:
                item = next(it)
            except StopIteration:
                return
            pending[pool.submit(fn, item)] = item

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                item = pending.pop(fut)
                exc = fut.exception()
                yield item, (exc if exc is not None else fut.result())
            fill()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
