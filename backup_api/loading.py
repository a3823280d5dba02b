"""Reading an import file: its lines checked in worker processes while this one writes, in order.

An import is bound by the checks of each line (the strict parse, the catalog, the times) far more
than by SQLite: so the lines go in blocks to worker processes, and the records come back in the
file's order, a bounded number of blocks ahead. A line is read in pieces of bounded size (a line
longer than MAX_LINE_BYTES is refused before the rest of it is read) and a block is bounded in bytes
as well as in lines: memory stays flat whatever the file holds. The first bad line stops the import:
it is checked again here, to raise its own error (LineError, its number with it).
"""

import collections
import itertools
import marshal
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from marshmallow import ValidationError

from backup_api.config import MAX_BODY_BYTES

# The longest line an import reads: what an HTTP request may hold (an event within the body limit),
# and as much again for the line's envelope around it (its id, received_at and sub).
MAX_LINE_BYTES = 2 * MAX_BODY_BYTES
# Lines a worker checks at a time (fewer once they hold BLOCK_BYTES), and the blocks under way at once.
BLOCK_LINES = 2000
BLOCK_BYTES = 4 << 20
BLOCKS_AHEAD = 4
# A block checks in well under a second; a worker silent this long is gone (killed, out of memory),
# and its block would otherwise be waited for for ever.
BLOCK_TIMEOUT_S = 300


class LineError(ValueError):
    """A line of an import file that cannot be loaded: line is its number (from 1), __cause__ what is wrong."""

    def __init__(self, line: int, cause: Exception):
        super().__init__(f"line {line}: {cause}")
        self.line = line


def bounded_lines(file: BinaryIO) -> Iterator[bytes]:
    """Yield the lines of file; refuse (LineError) one longer than MAX_LINE_BYTES without reading the rest of it."""
    for number in itertools.count(1):
        raw = file.readline(MAX_LINE_BYTES + 1)  # + 1: its end of line
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            problem = ValueError(f"the line is longer than {MAX_LINE_BYTES:,} bytes, the most an import reads"
                                 " (an event within the 1 MiB an HTTP request may hold, and its line's fields)")
            raise LineError(number, problem) from problem
        yield raw


def _block(lines: Iterator[bytes]) -> list[bytes]:
    """Take the next lines, up to BLOCK_LINES of them or until they hold BLOCK_BYTES."""
    block, size = [], 0
    for raw in lines:
        block.append(raw)
        size += len(raw)
        if len(block) == BLOCK_LINES or size >= BLOCK_BYTES:
            break
    return block


def worker_count() -> int:
    """Worker processes for the checks: the cores this process may use, the writer's own included."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_block(load: Callable[[bytes], object], block: list[bytes]) -> tuple[bytes, int | None]:
    """Check lines with load; return the records (marshalled), and the position of the first bad line (None if none).

    The records are plain tuples of strings and numbers, which marshal writes and reads four times as fast as
    pickle (which multiprocessing would use): reading them back is work for the one process that writes.
    """
    records = []
    for position, raw in enumerate(block):
        try:
            records.append(load(raw))
        except Exception:  # noqa: BLE001 - any failure: the line is checked again by the writer
            return marshal.dumps(records), position
    return marshal.dumps(records), None


def checked_lines(lines: Iterable[bytes], load: Callable[[bytes], object]) -> Iterator:
    """Yield load(line) for each line (its end of line cut), in order; a line load refuses raises LineError.

    load returns plain values (tuples, strings, numbers, None), which the workers marshal. With one
    core, or few lines, everything is checked here.
    """
    lines = (raw.rstrip(b"\r\n") for raw in lines)
    first = _block(lines)
    following = next(lines, None)
    lines = itertools.chain([] if following is None else [following], lines)
    workers = worker_count()
    if workers < 2 or following is None:
        yield from _checked_here(itertools.chain(first, lines), load, 1)
        return
    # fork: the workers start at once, with load and this process's modules; none touches the
    # store (nor any of this process's files) and they end by os._exit, closing nothing of ours.
    with multiprocessing.get_context("fork").Pool(workers, initializer=_leave_interrupts_to_the_parent) as pool:
        pending: collections.deque = collections.deque()
        number = 1

        def submit(block):
            nonlocal number
            if block:
                pending.append((number, block, pool.apply_async(_check_block, (load, block))))
                number += len(block)

        submit(first)
        for _ in range(BLOCKS_AHEAD - 1):
            submit(_block(lines))
        while pending:
            start, block, result = pending.popleft()
            try:
                records, bad = result.get(timeout=BLOCK_TIMEOUT_S)
                records = marshal.loads(records)
            except multiprocessing.TimeoutError:
                raise RuntimeError(f"the worker process checking lines {start} to {start + len(block) - 1}"
                                   f" gave no answer in {BLOCK_TIMEOUT_S} s; nothing was imported") from None
            submit(_block(lines))
            yield from records
            if bad is not None:
                _load(load, block[bad], start + bad)  # raises, here, the line's own error
                raise RuntimeError(f"line {start + bad} failed in a worker and passed here")


def _leave_interrupts_to_the_parent() -> None:
    """A worker ignores Ctrl-C (SIGINT, sent to the terminal's whole group): the importing process stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
