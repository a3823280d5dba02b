"""The single executable's entry point (PyInstaller builds it): the game-backup-api command.

A one-file executable unpacks itself into a new folder (_MEIxxxxxx, in TMPDIR or /tmp) at each
start, and removes it at exit; a process killed with SIGKILL cannot, and under a restart loop
those folders (about 54 MB each) would fill /tmp. So each start first removes the ones left by
its own dead predecessors.
"""

import os
import shutil
import sys
import time

# A folder younger than this may be one another start is still unpacking into: left alone.
UNPACKING_SECONDS = 60


def folders_in_use() -> set[str]:
    """The unpack folders whose files a live process of this user maps (its libpython, for one)."""
    used = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
                for line in maps:
                    at = line.find("/_MEI")
                    if at != -1:
                        used.add(line[line.rfind(" ", 0, at) + 1 : line.find("/", at + 1)].strip())
        except OSError:  # gone meanwhile, or another user's
            continue
    return used


def remove_stale_unpack_folders() -> None:
    """Remove the unpack folders beside this one that belong to this user and no live process."""
    ours = getattr(sys, "_MEIPASS", None)
    if ours is None or not os.path.isdir("/proc"):
        return  # not frozen, or no /proc to tell which are in use
    parent = os.path.dirname(ours)
    candidates = []
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not name.startswith("_MEI") or path == ours:
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if os.path.isdir(path) and not os.path.islink(path) and st.st_uid == os.getuid() and (
            time.time() - st.st_mtime > UNPACKING_SECONDS
        ):
            candidates.append(path)
    if candidates:
        used = folders_in_use()
        for path in candidates:
            if path not in used:
                shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    remove_stale_unpack_folders()
    from backup_api.cli import main

    main(prog_name="game-backup-api")
