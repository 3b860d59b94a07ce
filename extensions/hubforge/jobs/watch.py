"""Listing a watch trigger's files in a user's home without following links.

The service runs as root and the home belongs to the user, who could replace a folder
on the watched path by a link to somewhere they may not read. So the path is opened one
component at a time with ``O_NOFOLLOW`` relative to the previous one, and only regular
files (not links) are reported.
"""

from __future__ import annotations

import contextlib
import os
import stat

from .triggers import WatchTrigger


def list_matches(home: str, trigger: WatchTrigger) -> dict[str, str]:
    """``{path relative to home: "<mtime_ns>-<size>"}`` of the files matching `trigger`."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in [p for p in trigger.directory.split("/") if p and p != "."]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
        found = {}
        with os.scandir(fd) as entries:
            for entry in entries:
                relative = f"{trigger.directory}/{entry.name}" if trigger.directory else entry.name
                if not trigger.matches(relative):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found[relative] = f"{st.st_mtime_ns}-{st.st_size}"
        return found
    finally:
        os.close(fd)
