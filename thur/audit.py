"""The audit log: who changed what through the admin API, and what came of it.

Append-only JSON lines under `<data_dir>/audit/`, in numbered segment files
(`audit-000001.jsonl`, `audit-000002.jsonl`, ...). Each line is one entry in
canonical JSON (keys sorted, no spaces, ASCII only):

    {"args":{"drive":1,"slot":3},"hash":"<64 hex>","prev":"<64 hex>",
     "result":{"ok":true},"seq":7,"time":"2026-11-30T10:00:00.123Z",
     "verb":"changer.load","who":{"gid":0,"pid":4242,"uid":0,"user":"root"}}

`hash` = BLAKE3-256(bytes.fromhex(prev) + canonical JSON of the entry without
`hash`); `prev` is the previous entry's hash (64 zeros before seq 1), across
segment files. An entry is written (one write(2)) and fdatasync'ed before the
admin reply is sent.

`verify()` needs no daemon. It checks every line is byte-identical to its
canonical form, every hash, every prev link and that seq counts up by one:
any edit to an entry names that entry. A final line without its newline is a
torn append (kill -9 or power loss mid-write, never acknowledged): verify
reports it as broken (exit 1) with its own message; the daemon's next start
cuts it off and records an `audit.repair` entry saying what it dropped, so a
crash never stops the daemon from starting.

Rotation: an append that would take the current segment past `segment_bytes`
starts the next segment; only the newest `keep_segments` are kept. When
older segments were pruned, the first kept entry's prev cannot be checked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import pwd
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blake3 import blake3

from thur.fsutil import fsync_dir

log = logging.getLogger(__name__)

GENESIS = "0" * 64
FIELDS = frozenset({"seq", "time", "who", "verb", "args", "result", "prev", "hash"})
SEGMENT_RE = re.compile(r"^audit-(\d{6,})\.jsonl$")
LOCK_NAME = ".lock"
DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_KEEP_SEGMENTS = 8  # 8 x 16 MiB: bounded at about 128 MiB
REDACTED = "***"
# Argument names whose values never reach the log (CHAP passwords, NVMe DH-HMAC-CHAP
# keys and PSKs, tokens).
SECRET_KEY_RE = re.compile(r"pass(word|phrase)?|secret|token|psk|dhchap|(^|_)key$", re.IGNORECASE)
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")

EXIT_VALID = 0
EXIT_BROKEN = 1
EXIT_IO = 2


class AuditError(Exception):
    """The audit log cannot be written or read; the message is one line."""


# ---- entries ------------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """The one byte form an entry is hashed and stored in."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def entry_hash(prev: str, body: dict[str, Any]) -> str:
    """BLAKE3 over the previous hash and the entry without its own hash."""
    return blake3(bytes.fromhex(prev) + canonical(body)).hexdigest()


def segment_name(number: int) -> str:
    return f"audit-{number:06d}.jsonl"


def redact(value: Any) -> Any:
    """`value` with every secret-named key's value replaced, and only JSON types."""
    if isinstance(value, dict):
        return {
            str(k): REDACTED if SECRET_KEY_RE.search(str(k)) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # canonical JSON has no NaN
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


@dataclass(frozen=True)
class Who:
    """The process on the other end of the admin socket (SO_PEERCRED: the kernel's word)."""

    uid: int
    gid: int
    pid: int

    def as_dict(self) -> dict[str, Any]:
        try:
            user: str | None = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            user = None
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "user": user}


def peer_of(sock: socket.socket) -> Who:
    """The credentials of a Unix socket's peer, as the kernel recorded them at connect."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Who(uid=uid, gid=gid, pid=pid)


def this_process() -> Who:
    return Who(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(raw: bytes) -> dict[str, Any] | None:
    """An entry-shaped dict from one line, or None (tail and repair use this; verify is
    stricter)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if (isinstance(entry, dict) and type(entry.get("seq")) is int
            and isinstance(entry.get("hash"), str) and HEX64_RE.match(entry["hash"])):
        return entry
    return None


# ---- segments -----------------------------------------------------------------------------


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(number, path) of every segment, oldest first; OSError if the directory is unreadable."""
    found = []
    for name in os.listdir(directory):
        m = SEGMENT_RE.match(name)
        if m:
            found.append((int(m.group(1)), directory / name))
    return sorted(found)


@contextlib.contextmanager
def _flocked(fd: int | None, how: int) -> Iterator[None]:
    if fd is None:
        yield
        return
    fcntl.flock(fd, how)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def snapshot(directory: Path) -> dict[int, int]:
    """{segment number: size} at a moment no append is half written.

    The writer holds an exclusive flock on `.lock` while it writes; a reader that
    cannot open it (no permission, an older layout) reads without it.
    """
    try:
        fd: int | None = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        fd = None
    try:
        with _flocked(fd, fcntl.LOCK_SH):
            return {n: p.stat().st_size for n, p in list_segments(directory)}
    finally:
        if fd is not None:
            os.close(fd)


def _read(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def read_entries(directory: Path, n: int = 20, after: int | None = None) -> list[dict[str, Any]]:
    """The newest `n` entries, or (with `after`) the first `n` whose seq is above it;
    oldest first. Lines that are not entries are left out: `verify` reports them."""
    try:
        sizes = snapshot(directory)
        collected: list[dict[str, Any]] = []
        for number in sorted(sizes, reverse=True):
            try:
                data = _read(directory / segment_name(number), sizes[number])
            except FileNotFoundError:
                break  # pruned by a rotation since the snapshot
            lines = data.split(b"\n")[:-1]
            entries = [e for e in map(_parse, lines) if e is not None]
            if after is not None:
                newer = [e for e in entries if e["seq"] > after]
                collected = newer + collected
                if len(newer) < len(entries):
                    break
            else:
                collected = entries + collected
                if len(collected) >= n:
                    break
    except OSError as exc:
        raise AuditError(f"cannot read the audit log in {directory}: {exc.strerror}") from None
    if after is not None:
        return collected[:n]
    return collected[-n:] if n > 0 else []


# ---- verify -------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    status: str  # "valid", "broken" or "io-error"
    message: str
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    segments: int = 0
    pruned: bool = False  # older segments were removed by rotation
    torn: bool = False  # broken only by a torn final line (a crash mid-append)
    segment: str | None = None  # where it is broken
    line: int | None = None
    seq: int | None = None

    @property
    def exit_code(self) -> int:
        return {"valid": EXIT_VALID, "broken": EXIT_BROKEN}.get(self.status, EXIT_IO)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerifyReport:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class _Broken(Exception):
    def __init__(self, message: str, line: int | None = None, seq: int | None = None,
                 torn: bool = False) -> None:
        super().__init__(message)
        self.line, self.seq, self.torn = line, seq, torn


class _Chain:
    """Checks entries in order, one segment at a time."""

    def __init__(self) -> None:
        self.prev_seq: int | None = None
        self.prev_hash: str | None = None
        self.first_seq: int | None = None
        self.entries = 0

    def segment(self, number: int, is_first: bool, is_last: bool, data: bytes) -> None:
        lines = data.split(b"\n")
        tail = lines.pop()
        for index, raw in enumerate(lines, 1):
            self.line(raw, index, first_segment=number if is_first else None)
        if tail:
            where = f"line {len(lines) + 1}"
            if is_last:
                raise _Broken(
                    f"{where}: torn final line ({len(tail)} bytes without a newline: an append "
                    "cut short by a crash, never acknowledged); the daemon cuts it off and "
                    "records an audit.repair entry at its next start",
                    len(lines) + 1, torn=True)
            raise _Broken(f"{where}: a line without its newline before the end of the log",
                          len(lines) + 1)

    def line(self, raw: bytes, index: int, first_segment: int | None) -> None:
        after = f" (after seq {self.prev_seq})" if self.prev_seq is not None else ""
        try:
            entry = json.loads(raw)
        except ValueError:
            raise _Broken(f"line {index}{after}: not a JSON entry", index) from None
        if not isinstance(entry, dict) or set(entry) != FIELDS:
            raise _Broken(f"line {index}{after}: not an audit entry (fields "
                          f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__})",
                          index)
        seq, prev, digest = entry["seq"], entry["prev"], entry["hash"]
        if (type(seq) is not int or not isinstance(prev, str) or not HEX64_RE.match(prev)
                or not isinstance(digest, str) or not HEX64_RE.match(digest)):
            raise _Broken(f"line {index}{after}: malformed seq, prev or hash", index)
        where = f"line {index} (seq {seq})"
        body = {k: v for k, v in entry.items() if k != "hash"}
        if entry_hash(prev, body) != digest:
            raise _Broken(f"{where}: its hash does not match its content: the entry was altered",
                          index, seq)
        if canonical(entry) != raw:
            raise _Broken(f"{where}: not byte-identical to its canonical form: the line was "
                          "altered", index, seq)
        if self.prev_seq is None:
            # The very first entry links to GENESIS; after pruning, prev is taken on trust.
            if first_segment == 1 and seq != 1:
                raise _Broken(f"{where}: the log's first entry is not seq 1", index, seq)
            if seq == 1 and prev != GENESIS:
                raise _Broken(f"{where}: seq 1 does not start the chain (prev is not zero)",
                              index, seq)
            self.first_seq = seq
        else:
            if seq != self.prev_seq + 1:
                raise _Broken(f"{where}: seq {seq} follows seq {self.prev_seq}: entries were "
                              "removed, inserted or reordered", index, seq)
            if prev != self.prev_hash:
                raise _Broken(f"{where}: prev does not match the hash of seq {self.prev_seq}",
                              index, seq)
        self.prev_seq, self.prev_hash = seq, digest
        self.entries += 1


def verify(directory: Path) -> VerifyReport:
    """Check the whole chain in `directory`; needs no daemon.

    Status valid (exit 0), broken (exit 1, the message names segment, line and seq) or
    io-error (exit 2: missing or unreadable directory or segment, or no segments).
    """
    try:
        sizes = snapshot(directory)
    except FileNotFoundError:
        return VerifyReport("io-error", f"no audit log at {directory}")
    except OSError as exc:
        return VerifyReport("io-error", f"cannot read {directory}: {exc.strerror}")
    if not sizes:
        return VerifyReport("io-error", f"no audit log segments in {directory}")
    numbers = sorted(sizes)
    for a, b in zip(numbers, numbers[1:], strict=False):
        if b != a + 1:
            return VerifyReport(
                "broken", f"{segment_name(a + 1)} is missing: the entries between "
                f"{segment_name(a)} and {segment_name(b)} were removed",
                segments=len(numbers), segment=segment_name(a + 1))
    chain = _Chain()
    read = 0
    for number in numbers:
        name = segment_name(number)
        try:
            data = _read(directory / name, sizes[number])
        except FileNotFoundError:
            if read == 0:
                continue  # pruned by a rotation while we looked
            return VerifyReport("io-error", f"{directory / name} disappeared while verifying")
        except OSError as exc:
            return VerifyReport("io-error", f"cannot read {directory / name}: {exc.strerror}")
        try:
            chain.segment(number, read == 0, number == numbers[-1], data)
        except _Broken as broken:
            return VerifyReport(
                "broken", f"{name} {broken}", entries=chain.entries, first_seq=chain.first_seq,
                last_seq=chain.prev_seq, last_hash=chain.prev_hash, segments=len(numbers),
                pruned=numbers[0] > 1, torn=broken.torn, segment=name, line=broken.line,
                seq=broken.seq)
        read += 1
    pruned = numbers[0] > 1
    span = (f"seq {chain.first_seq}-{chain.prev_seq}" if chain.entries else "no entries yet")
    note = f" (segments before {segment_name(numbers[0])} were pruned)" if pruned else ""
    return VerifyReport(
        "valid", f"{chain.entries} entries ({span}) in {read} segment(s), chain intact{note}",
        entries=chain.entries, first_seq=chain.first_seq, last_seq=chain.prev_seq,
        last_hash=chain.prev_hash, segments=read, pruned=pruned)


# ---- the writer ---------------------------------------------------------------------------


class AuditLog:
    """The daemon's appender. Opening it repairs a torn tail (recording that it did);
    appends are serialised and durable when `record` returns."""

    def __init__(self, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 keep_segments: int = DEFAULT_KEEP_SEGMENTS) -> None:
        if keep_segments < 1 or segment_bytes < 1:
            raise ValueError("keep_segments and segment_bytes must be positive")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.keep_segments = keep_segments
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._failed: str | None = None  # a failed write whose bytes could not be cut off
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                                0o640)
        with _flocked(self._lock_fd, fcntl.LOCK_EX):
            torn = self._open_tail()
        if torn is not None:
            with self._mutex:
                self._append(this_process(), "audit.repair", torn, {"ok": True})

    @property
    def path(self) -> Path:
        return self.directory / segment_name(self._number)

    def _open_segment(self, number: int) -> None:
        fd = os.open(self.directory / segment_name(number),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._number, self._fd, self._size = number, fd, os.fstat(fd).st_size
        self._new_segment = self._size == 0  # its directory entry is not yet durable

    def _open_tail(self) -> dict[str, Any] | None:
        """Open the newest segment; cut off a torn last line. Returns what was cut."""
        segments = list_segments(self.directory)
        self._open_segment(segments[-1][0] if segments else 1)
        assert self._fd is not None
        data = _read(self.path, self._size)
        keep = data.rfind(b"\n") + 1
        torn = None
        if keep < len(data):
            dropped = data[keep:]
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
            self._size = keep
            torn = {"segment": self.path.name, "line": data.count(b"\n") + 1, "offset": keep,
                    "dropped_bytes": len(dropped),
                    "dropped": dropped[:200].decode("utf-8", "replace")}
            log.warning("audit log: cut off a torn last line in %s (%d bytes at offset %d)",
                        self.path.name, len(dropped), keep)
        self._seq, self._hash = self._tail_of(segments, data[:keep])
        return torn

    def _tail_of(self, segments: list[tuple[int, Path]], data: bytes) -> tuple[int, str]:
        """seq and hash of the last entry, looking back through older segments."""
        older = [p for n, p in segments if n < self._number]
        while True:
            lines = data.split(b"\n")[:-1]
            for index in range(len(lines) - 1, -1, -1):
                entry = _parse(lines[index])
                if entry is not None:
                    if index < len(lines) - 1:
                        log.error("audit log: the last %d line(s) of %s are not entries; "
                                  "chaining on from seq %d (`audit verify` reports them)",
                                  len(lines) - 1 - index, self.path.name, entry["seq"])
                    return entry["seq"], entry["hash"]
            if not older:
                return 0, GENESIS
            data = older.pop().read_bytes()

    def ready(self) -> None:
        """Raise AuditError while the log cannot be written (state changes are refused then)."""
        with self._mutex:
            self._check_writable()

    def _check_writable(self) -> None:
        if self._fd is None:
            raise AuditError("the audit log is closed")
        if self._failed is not None:
            try:  # try again to cut off what a failed append left
                os.ftruncate(self._fd, self._size)
                os.fsync(self._fd)
            except OSError:
                raise AuditError(self._failed) from None
            self._failed = None

    def record(self, who: Who, verb: str, args: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Append one entry; durable on return. Raises AuditError if it is not written."""
        with self._mutex:
            return self._append(who, verb, args, result)

    def _append(self, who: Who, verb: str, args: Any, result: dict[str, Any]) -> dict[str, Any]:
        self._check_writable()
        entry: dict[str, Any] = {
            "seq": self._seq + 1, "time": utc_now(), "who": who.as_dict(), "verb": verb,
            "args": redact(args), "result": redact(result), "prev": self._hash,
        }
        entry["hash"] = entry_hash(self._hash, entry)
        line = canonical(entry) + b"\n"
        with _flocked(self._lock_fd, fcntl.LOCK_EX):
            rotated = self._size > 0 and self._size + len(line) > self.segment_bytes
            assert self._fd is not None
            try:
                if rotated:
                    self._rotate()
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
                os.fdatasync(self._fd)
                if self._new_segment:
                    fsync_dir(self.directory)
                    self._new_segment = False
            except OSError as exc:
                self._undo(exc)
                raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror}") \
                    from None
        self._seq, self._hash, self._size = entry["seq"], entry["hash"], self._size + len(line)
        if rotated:
            self._prune()
        return entry

    def _undo(self, exc: OSError) -> None:
        """Cut off a partly written entry so the chain stays whole."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            self._failed = (f"the audit log {self.path} has a half-written entry that could not "
                            f"be removed ({exc.strerror}); state changes are refused")
            log.error("audit log: %s", self._failed)

    def _rotate(self) -> None:
        """Continue in the next segment (the old one stays open until the new one is)."""
        old = self._fd
        assert old is not None
        self._open_segment(self._number + 1)
        os.close(old)

    def _prune(self) -> None:
        try:
            old = [p for n, p in list_segments(self.directory)
                   if n <= self._number - self.keep_segments]
            for path in old:
                path.unlink()
            if old:
                fsync_dir(self.directory)
        except OSError as exc:
            log.warning("audit log: could not remove old segments: %s", exc)

    def verify(self) -> VerifyReport:
        return verify(self.directory)

    def tail(self, n: int = 20, after: int | None = None) -> list[dict[str, Any]]:
        return read_entries(self.directory, n, after)

    def close(self) -> None:
        with self._mutex:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
