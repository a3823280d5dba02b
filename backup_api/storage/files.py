"""Files that hold events, flags or the secret: private to their owner, whatever the umask."""

import os
import stat
from contextlib import suppress

# Every file holding events, flags or the secret is its owner's alone, whatever the umask.
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def make_private_folder(path: str) -> None:
    """Create the folder at path and its missing parents, each mode 0700 whatever the umask."""
    missing = []
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_FOLDER)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(folder, PRIVATE_FOLDER)  # the umask may have taken bits off


def create_private_file(path: str) -> None:
    """Create an empty file at path, mode 0600 whatever the umask, unless a file is there already.

    SQLite gives a database's -wal, -shm and -journal files the mode of the database file itself,
    so a database created this way keeps all of them private too.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def write_private_file(path: str, chunks, replace: bool = False) -> None:
    """Write the text chunks to a file at path, mode 0600 (its folder made 0700), all or nothing.

    Written to path.partial first, flushed to disk, then renamed: a reader sees the old file or the
    new one, and a failure midway leaves path as it was. An existing file is overwritten only when
    replace is true (else FileExistsError).
    """
    if not replace and os.path.exists(path):
        raise FileExistsError(f"{path} already exists; choose a new name")
    make_private_folder(os.path.dirname(os.path.abspath(path)))
    partial = path + ".partial"
    with suppress(FileNotFoundError):
        os.remove(partial)
    create_private_file(partial)
    try:
        with open(partial, "w", encoding="utf-8") as f:
            f.writelines(chunks)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.remove(partial)
        raise


def loose_modes(paths: list[str]) -> list[tuple[str, int]]:
    """Return those of paths that exist and that users other than the owner may read or write, with their modes."""
    loose = []
    for path in paths:
        with suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                loose.append((path, mode))
    return loose


def warn_of_loose_modes(logger, paths: list[str]) -> None:
    """Log a warning for each of paths that others may read or write; an operator's choice is not changed."""
    for path, mode in loose_modes(paths):
        logger.warning("%s has mode %04o: users other than its owner can read or change it (chmod 600)", path, mode)
