"""Reading and writing wheels on every core, within a memory budget.

Inflating, deflating and hashing release the GIL, so a thread per core reads (or writes)
another wheel meanwhile. ``Budget`` keeps the memory of one thread: a thread about to hold a
large member's bytes waits until the others' large members are let go, so two threads never hold
two large libraries at once (peak memory stays what one thread needs).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Bytes of members that threads may hold at once; one member over it is held alone.
BUDGET_BYTES = 48 << 20


def workers(limit: int = 4) -> int:
    """Threads to use: the cores this process may run on, at most ``limit``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, limit))


class Budget:
    """Bytes held at once by the threads that share it (``hold``)."""

    def __init__(self, limit: int = BUDGET_BYTES) -> None:
        self._limit = limit
        self._held = 0
        self._cv = threading.Condition()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Wait until ``size`` more bytes fit (or nothing else is held), hold them in the block."""
        if size < (1 << 20):  # small members are not worth the wait
            yield
            return
        with self._cv:
            self._cv.wait_for(lambda: self._held == 0 or self._held + size <= self._limit)
            self._held += size
        try:
            yield
        finally:
            with self._cv:
                self._held -= size
                self._cv.notify_all()


#: What a single-threaded caller passes: every hold is granted at once.
UNLIMITED = Budget(limit=1 << 62)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None,
                cost: Callable[[T], int] | None = None) -> list[R]:
    """``[fn(x) for x in items]``, run on ``threads`` threads (``workers()``), the costliest
    items started first (so no thread is left with a large one at the end); results in the
    order of ``items``; the first exception (in that order) is raised after all have run."""
    todo: Sequence[T] = list(items)
    n = workers() if threads is None else threads
    if n <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    start = sorted(range(len(todo)), key=lambda i: -cost(todo[i])) if cost else range(len(todo))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="dllreg") as pool:
        futures = {i: pool.submit(fn, todo[i]) for i in start}
    return [futures[i].result() for i in range(len(todo))]
