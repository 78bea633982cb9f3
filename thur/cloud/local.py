"""The `local` backend: objects as files under a directory (the default).

Writes are tmp + fsync + rename (+ directory fsync), so a crash never leaves
a half-written object under its final name. `put(if_absent=True)` is atomic:
the temporary file is hard-linked to the final name, which fails with EEXIST
if another writer got there first.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .backend import ObjectInfo, check_key
from .errors import AlreadyExists, BackendPermanent, BackendTransient, NotFound

_TMP = ".tmp"  # never a valid key component start, see check_key + list()


def _map_oserror(e: OSError, key: str) -> Exception:
    if isinstance(e, FileNotFoundError):
        return NotFound(key)
    if isinstance(e, PermissionError) or e.errno in (errno.EROFS, errno.ENOTDIR):
        return BackendPermanent(f"local backend: {key}: {e}")
    return BackendTransient(f"local backend: {key}: {e}")


class LocalBackend:
    """A directory as an object store."""

    conditional_create = True

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.name = f"local:{self.root}"
        self.fsync = fsync
        if not self.root.is_dir():
            raise BackendPermanent(f"local backend: {self.root} is not a directory")
        (self.root / _TMP).mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        check_key(key)
        if key.split("/")[0] == _TMP:
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        tmp = self.root / _TMP / uuid.uuid4().hex
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExists(key) from None
            else:
                os.replace(tmp, path)
            if self.fsync:
                fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise _map_oserror(e, key) from e
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read() if length is None else f.read(length)
        except IsADirectoryError:
            raise NotFound(key) from None
        except OSError as e:
            raise _map_oserror(e, key) from e

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as e:
            raise _map_oserror(e, key) from e
        if not path.is_file():
            raise NotFound(key)
        return ObjectInfo(key, st.st_size)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            return
        except OSError as e:
            raise _map_oserror(e, key) from e

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix points into, then filter by name.
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        try:
            for dirpath, dirnames, filenames in os.walk(base):
                rel = os.path.relpath(dirpath, self.root)
                if rel == ".":
                    dirnames[:] = [d for d in dirnames if d != _TMP]
                for name in filenames:
                    key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                    if key.startswith(prefix):
                        try:
                            size = os.stat(os.path.join(dirpath, name)).st_size
                        except FileNotFoundError:
                            continue  # deleted while listing
                        yield ObjectInfo(key, size)
        except OSError as e:
            raise _map_oserror(e, prefix) from e
