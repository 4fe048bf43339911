"""A process tree's memory as /proc shows it, for tests/sanitize/test_memory.py and
bench/sanitize.py: the sanitizer runs as a tree (the worker, bubblewrap, ffmpeg), and the
pages of a memfd are charged to the machine but show in no process's RSS unless mapped,
so they are counted apart, once each."""

from __future__ import annotations

import os


def tree(root: int) -> list[int]:
    """`root` and every process descended from it, as far as /proc shows them now."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as file:
                    queue += [int(p) for p in file.read().split()]
        except OSError:
            pass  # gone meanwhile
    return pids


def status(pid: int) -> dict[str, int | str]:
    """Name, and the memory fields in KiB (VmRSS, VmHWM, RssAnon, RssFile, RssShmem), of
    /proc/PID/status; empty once the process is gone."""
    fields: dict[str, int | str] = {}
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                key, _, value = line.partition(":")
                if key == "Name":
                    fields[key] = value.strip()
                elif key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields


def memfds(pid: int, seen: dict[tuple[int, int], int]) -> None:
    """Adds the memfds `pid` holds open to `seen`: (device, inode) -> bytes resident, so a
    memfd open in several processes counts once."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        try:
            if not os.readlink(f"{folder}/{name}").startswith("/memfd:"):
                continue
            info = os.stat(f"{folder}/{name}")
        except OSError:
            continue
        seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
