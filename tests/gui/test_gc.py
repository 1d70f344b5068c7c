"""Cyclic garbage is collected on the GUI thread while a window is open, never on a worker thread.

A collection that ran on the Changes tab's worker (loading a change head) freed Qt objects of the GUI thread and
crashed the process (a segmentation fault in the test run). With the window's collector, a worker that allocates
past every threshold triggers no collection; the next timer tick on the GUI thread does it."""

from __future__ import annotations

import gc
import threading


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collections_run_on_the_gui_thread_while_a_window_is_open(qtbot, make_window) -> None:  # type: ignore[no-untyped-def]
    window = make_window()
    assert not gc.isenabled()
    threads: list[str] = []

    def seen(phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            threads.append(threading.current_thread().name)

    gc.callbacks.append(seen)
    try:

        def allocate() -> None:  # far past the youngest generation's threshold (700 by default)
            for _ in range(50_000):
                Cycle()

        worker = threading.Thread(target=allocate, name="worker")
        worker.start()
        worker.join()
        assert threads == []  # automatic collection would have run on the worker, many times
        qtbot.waitUntil(lambda: bool(threads), timeout=5000)
        assert set(threads) == {threading.main_thread().name}
    finally:
        gc.callbacks.remove(seen)
    window.shutdown()  # the last window gives collection back to the interpreter
    assert gc.isenabled()
