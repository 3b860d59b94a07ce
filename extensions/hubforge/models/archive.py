"""Model archives: an MLflow model directory as a tar.gz, packed and unpacked safely.

The service unpacks what users upload, as the hub's account (often root), so nothing in
an archive may point outside its directory: only regular files and folders, no links or
devices, no absolute or ``..`` names, and a cap on the unpacked size (a small archive can
unpack to a huge one). Python 3.11.2 (Debian 12) has no ``tarfile`` extraction filters,
so the checks are written out here.
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
from pathlib import Path

from .errors import InvalidArchive


def pack(directory: str | os.PathLike) -> bytes:
    """A tar.gz of `directory`'s contents (its files at the archive's top level)."""
    buffer = io.BytesIO()
    root = Path(directory)
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                continue
            archive.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


def unpack(fileobj, dest: str | os.PathLike, max_bytes: int) -> None:
    """Unpack a tar.gz from `fileobj` into the (new, empty) folder `dest`.

    Raises InvalidArchive naming the first offending member; `dest` may then hold part of
    the archive, and the caller removes it.
    """
    dest = Path(dest)
    total = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            for member in archive:
                raw = member.name
                while raw.startswith("./"):
                    raw = raw[2:]
                name = posixpath.normpath(raw) if raw else "."
                if member.name.startswith("/") or name == ".." or name.startswith("../") or "/../" in f"/{raw}/":
                    raise InvalidArchive(f"the archive's member {member.name!r} points outside the model folder")
                if name == ".":
                    continue
                target = dest / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True, mode=0o755)
                    continue
                if not member.isfile():
                    raise InvalidArchive(f"the archive's member {member.name!r} is not a regular file or folder "
                                         "(links and devices are refused)")
                total += member.size
                if total > max_bytes:
                    raise InvalidArchive(f"the model unpacks to more than {max_bytes / 2**20:g} MiB", 413)
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                source = archive.extractfile(member)
                with open(target, "xb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                os.chmod(target, 0o644)
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, FileExistsError):
            raise InvalidArchive(f"the archive holds {e.filename!r} twice") from None
        raise InvalidArchive(f"the upload is not a readable tar.gz archive: {e}") from None
