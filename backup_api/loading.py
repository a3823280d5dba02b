"""Reading an import file: its lines checked in worker processes while this one writes, in order.

An import is bound by the checks of each line (the strict parse, the catalog, the times) far more
than by SQLite: so the lines go in blocks to worker processes, and the records come back in the
file's order, a bounded number of blocks ahead (memory stays flat whatever the file's size). The
first bad line stops the import: it is checked again here, to raise its own error (LineError, its
number with it).
"""

import collections
import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator

from marshmallow import ValidationError

# Lines a worker checks at a time, and the blocks under way at once.
BLOCK_LINES = 2000
BLOCKS_AHEAD = 4
# A block checks in well under a second; a worker silent this long is gone (killed, out of memory),
# and its block would otherwise be waited for for ever.
BLOCK_TIMEOUT_S = 300


class LineError(ValueError):
    """A line of an import file that cannot be loaded: line is its number (from 1), __cause__ what is wrong."""

    def __init__(self, line: int, cause: Exception):
        super().__init__(f"line {line}: {cause}")
        self.line = line


def worker_count() -> int:
    """Worker processes for the checks: the cores this process may use, the writer's own included."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_block(load: Callable[[bytes], object], block: list[bytes]) -> tuple[list, int | None]:
    """Check lines with load; return the records, and the position of the first bad line (None if none)."""
    records = []
    for position, raw in enumerate(block):
        try:
            records.append(load(raw))
        except Exception:  # noqa: BLE001 - any failure: the line is checked again by the writer
            return records, position
    return records, None


def checked_lines(lines: Iterable[bytes], load: Callable[[bytes], object]) -> Iterator:
    """Yield load(line) for each line (its end of line cut), in order; a line load refuses raises LineError.

    With one core, or few lines, everything is checked here.
    """
    lines = (raw.rstrip(b"\r\n") for raw in lines)
    first = list(itertools.islice(lines, BLOCK_LINES))
    workers = worker_count()
    if workers < 2 or len(first) < BLOCK_LINES:
        yield from _checked_here(itertools.chain(first, lines), load, 1)
        return
    # fork: the workers start at once, with load and this process's modules; none touches the
    # store (nor any of this process's files) and they end by os._exit, closing nothing of ours.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        number = 1

        def submit(block):
            nonlocal number
            if block:
                pending.append((number, block, pool.apply_async(_check_block, (load, block))))
                number += len(block)

        submit(first)
        for _ in range(BLOCKS_AHEAD - 1):
            submit(list(itertools.islice(lines, BLOCK_LINES)))
        while pending:
            start, block, result = pending.popleft()
            try:
                records, bad = result.get(timeout=BLOCK_TIMEOUT_S)
            except multiprocessing.TimeoutError:
                raise RuntimeError(f"the worker process checking lines {start} to {start + len(block) - 1}"
                                   f" gave no answer in {BLOCK_TIMEOUT_S} s; nothing was imported") from None
            submit(list(itertools.islice(lines, BLOCK_LINES)))
            yield from records
            if bad is not None:
                _load(load, block[bad], start + bad)  # raises, here, the line's own error
                raise RuntimeError(f"line {start + bad} failed in a worker and passed here")


def _checked_here(lines: Iterable[bytes], load, first: int) -> Iterator:
    """Yield load(line) for each line, checked in this process."""
    for number, raw in enumerate(lines, first):
        yield _load(load, raw, number)


def _load(load, raw: bytes, number: int):
    """Return load(raw); what it raises (a line refused) becomes a LineError of line number."""
    try:
        return load(raw)
    except (ValidationError, ValueError) as exc:  # BodyError among them: this line's fault
        raise LineError(number, exc) from exc
