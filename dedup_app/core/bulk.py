"""Bulk work on a pool thread that leaves Python's interpreter lock to the window often.

A slider regroup at a million files runs on a pool thread beside the window, and the window needs the interpreter
lock for every call into the groups model. Python code hands the lock over every few milliseconds, but a single C
call over a million items (turning a list of strings into an array, freeing a list of a hundred thousand lists)
keeps it to the end, and the window stalls for that long. These helpers cut such calls into short ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Items per C call: a few milliseconds each.
STEP = 16_384


def text_array(strings: Sequence[str]) -> np.ndarray:
    """``strings`` as a NumPy unicode array (for sorting by NumPy, which lets go of the lock), built a slice at a
    time."""
    if len(strings) <= STEP:
        return np.array(strings, dtype=str)
    return np.concatenate([np.array(strings[k : k + STEP], dtype=str) for k in range(0, len(strings), STEP)])


def text_rank(strings: Sequence[str]) -> np.ndarray:
    """The rank of each of ``strings`` in sorted order (stable: equal strings keep their order)."""
    rank = np.empty(len(strings), np.int64)
    rank[np.argsort(text_array(strings), kind="stable")] = np.arange(len(strings))
    return rank


def flat_array(lists: Sequence[Sequence[int]]) -> np.ndarray:
    """The integers of ``lists``, one after another, as an int64 array (built a slice of lists at a time)."""
    parts = [np.fromiter(itertools.chain.from_iterable(lists[k : k + STEP]), np.int64)
             for k in range(0, len(lists), STEP)]  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def drain(items: list[Any] | dict[Any, Any] | set[Any]) -> None:
    """Empty ``items`` (a list from the end, a dict or a set an item at a time): the objects only it holds are freed
    a few at a time instead of all at once when it goes."""
    pop = items.popitem if isinstance(items, dict) else items.pop
    while items:
        pop()
