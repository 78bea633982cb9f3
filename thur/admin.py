"""The daemons' admin API: JSON over a Unix socket, one request per line.

Request:  {"verb": "library.info", "args": {...}}
Reply:    {"ok": true, "result": ...}  or  {"ok": false, "error": "one line"}

Streaming (long operations such as `system.gc`): a request that adds
`"stream": true` may get any number of `{"progress": ...}` lines before the one
final `{"ok": ...}` line. Without the flag the server sends only the final line,
so a client that knows nothing of streaming is served as before. A verb that
reports progress is marked `streaming`; its handler takes `(args, progress)`.

The CLIs (and later the shell and HTTP) are thin skins over this; every
state-changing operation goes through it, and with an `AuditLog` each such call
is recorded (who from SO_PEERCRED, verb, redacted args, result) before the reply
is sent. Every verb is audited unless its handler is marked `read_only`, so a
verb added without thought is recorded rather than missed.

The socket is mode 0660, group `group` (when that group exists; else the
daemon's own). It is bound inside a private 0700 directory and renamed into
place, so it is never reachable with looser permissions, not even briefly.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thur.audit import AuditError, AuditLog, Who, peer_of, read_entries, verify

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
Progress = Callable[[Any], None]
MAX_REQUEST = 1 << 20


class AdminError(Exception):
    """The daemon refused a request, or could not be reached."""


class DaemonNotRunning(AdminError):
    """Nothing listens on the admin socket (as opposed to a refusal)."""


# --- a verb's arguments, checked: a wrong type is a one-line refusal naming it --------


def int_arg(args: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"'{name}' must be a whole number, not {value!r}")
    return value


def str_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise AdminError(f"'{name}' must be a string, not {value!r}")
    return value


def bool_arg(args: dict[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise AdminError(f"'{name}' must be true or false, not {value!r}")
    return value


def read_only(handler: Handler) -> Handler:
    """Mark a verb that changes nothing: the audit log does not record its calls."""

    @functools.wraps(handler)
    def run(args: dict[str, Any]) -> Any:
        return handler(args)

    run.read_only = True  # type: ignore[attr-defined]
    return run


def is_read_only(handler: Handler) -> bool:
    return bool(getattr(handler, "read_only", False))


def streaming(handler: Callable[[dict[str, Any], Progress], Any]) -> Handler:
    """Mark a verb that reports progress: the server calls it with `(args, progress)`.

    `progress(value)` sends `{"progress": value}` to a client that asked for a stream
    (and does nothing otherwise). Audited like any verb unless also `read_only`.
    """

    @functools.wraps(handler)
    def run(args: dict[str, Any], progress: Progress | None = None) -> Any:
        return handler(args, progress or (lambda _value: None))

    run.streaming = True  # type: ignore[attr-defined]
    return run


def is_streaming(handler: Handler) -> bool:
    return bool(getattr(handler, "streaming", False))


def _count(args: dict[str, Any], name: str, default: int | None, hi: int) -> int | None:
    value = args.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise AdminError(f"'{name}' must be a whole number from 0 to {hi}, not {value!r}")
    return value


def audit_verbs(audit: AuditLog) -> dict[str, Handler]:
    """`audit.tail {"n"?: int, "after"?: seq}` and `audit.verify {}`, served with the log."""

    def tail(args: dict[str, Any]) -> dict[str, Any]:
        n = _count(args, "n", 20, 10000)
        assert n is not None
        try:
            return {"entries": read_entries(audit.directory, n, _count(args, "after", None,
                                                                       1 << 62))}
        except AuditError as exc:
            raise AdminError(str(exc)) from None

    return {
        "audit.tail": read_only(tail),
        "audit.verify": read_only(lambda _args: verify(audit.directory).as_dict()),
    }


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    verbs: dict[str, Handler]
    audit: AuditLog | None


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        who = peer_of(self.request)
        line = self.rfile.readline(MAX_REQUEST)
        audit = self.server.audit
        audited = False
        verb: Any = None
        args: Any = {}
        try:
            request = json.loads(line)
            verb = request["verb"]
            args = request.get("args") or {}
            handler = self.server.verbs.get(verb)
            if handler is None:
                reply: dict[str, Any] = {"ok": False, "error": f"unknown verb {verb!r}"}
            else:
                if audit is not None and not is_read_only(handler):
                    # Fail closed: no state change that cannot be recorded.
                    audit.ready()
                    audited = True
                if is_streaming(handler):
                    send = self._progress if request.get("stream") is True else None
                    reply = {"ok": True, "result": handler(args, send)}  # type: ignore[call-arg]
                else:
                    reply = {"ok": True, "result": handler(args)}
        except AuditError as exc:
            log.error("refused %s from uid %d pid %d: %s", verb, who.uid, who.pid, exc)
            reply = {"ok": False, "error": f"refused: the audit log cannot be written ({exc})"}
        except AdminError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a bug must not kill the admin thread
            log.exception("admin request failed")
            reply = {"ok": False, "error": f"internal error: {exc}"}
        if audited:
            reply = self._record(who, verb, args, reply)
        with contextlib.suppress(OSError):  # the client may have gone: the work is done
            self.wfile.write(json.dumps(reply).encode() + b"\n")

    def _progress(self, value: Any) -> None:
        """One progress line; a client that went away stops getting them, the work goes on."""
        if getattr(self, "_gone", False):
            return
        try:
            self.wfile.write(json.dumps({"progress": value}).encode() + b"\n")
            self.wfile.flush()
        except OSError:
            self._gone = True

    def _record(self, who: Who, verb: str, args: Any, reply: dict[str, Any]) -> dict[str, Any]:
        """Durably record the call before answering; say so if that failed."""
        assert self.server.audit is not None
        result = {"ok": True} if reply["ok"] else {"ok": False, "error": reply["error"]}
        try:
            self.server.audit.record(who, verb, args, result)
        except AuditError as exc:
            log.error("%s from uid %d pid %d not recorded: %s", verb, who.uid, who.pid, exc)
            outcome = "was carried out" if reply["ok"] else f"failed ({reply['error']})"
            return {"ok": False, "error": f"{verb} {outcome} but could not be recorded in the "
                                          f"audit log: {exc}"}
        return reply


class AdminServer:
    """Serves `verbs` on a Unix socket in a background thread.

    With `audit`, calls of every verb not marked `read_only` are recorded, refusals
    included, and `audit.tail` / `audit.verify` are served; the server then owns
    the log and closes it. `group` owns the socket when it exists (a warning and
    the daemon's own group otherwise, so a development machine still works).
    """

    def __init__(self, path: Path, verbs: dict[str, Handler], group: str | None = None,
                 audit: AuditLog | None = None) -> None:
        self.path = path
        self.audit = audit
        path.parent.mkdir(parents=True, exist_ok=True)
        gid = -1
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                log.warning("group %s does not exist; the admin socket keeps the daemon's "
                            "group", group)
        private = Path(tempfile.mkdtemp(prefix=".", dir=path.parent))
        staged = private / "s"
        dir_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # Bound through /proc so the staging path is no longer than 108 bytes
            # (sun_path) even when the final path only just fits.
            self._server = _Server(f"/proc/self/fd/{dir_fd}/s", _RequestHandler)
            os.chmod(staged, 0o660)
            if gid != -1:
                os.chown(staged, -1, gid)
            os.replace(staged, path)  # also replaces a socket a crashed daemon left
        finally:
            os.close(dir_fd)
            with contextlib.suppress(OSError):
                staged.unlink()
            private.rmdir()
        self._inode = path.stat().st_ino
        self._server.verbs = dict(verbs) | (audit_verbs(audit) if audit is not None else {})
        self._server.audit = audit
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="admin", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits forever on a loop never started
            self._server.shutdown()
        self._server.server_close()
        # Only our own socket: a newer daemon may already serve at this path.
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        if self.audit is not None:
            self.audit.close()


def call(path: Path, verb: str, args: dict[str, Any] | None = None, timeout: float | None = 30,
         on_progress: Progress | None = None) -> Any:
    """Send one request; return its result or raise AdminError with the reason.

    With `on_progress`, ask for a stream: each progress line is handed to it as it
    comes. `timeout` bounds each wait for a line, so a long operation that keeps
    reporting progress is never cut off.
    """
    request: dict[str, Any] = {"verb": verb, "args": args or {}}
    if on_progress is not None:
        request["stream"] = True
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_reply(sock, on_progress)
    except FileNotFoundError:
        raise DaemonNotRunning(f"daemon not running (no socket at {path})") from None
    except ConnectionRefusedError:
        raise DaemonNotRunning(f"daemon not running (nobody listens on {path})") from None
    except PermissionError:
        raise AdminError(f"permission denied on {path} (run as root or in its group)") from None
    except TimeoutError:
        raise AdminError(f"daemon did not answer within {timeout:.0f} s") from None
    except OSError as exc:  # reset, not a socket, path too long...
        raise AdminError(f"cannot talk to the daemon on {path}: {exc.strerror or exc}") from None
    ok, error, result = reply.get("ok"), reply.get("error"), reply.get("result")
    if not ok:
        raise AdminError(str(error or "request refused"))
    return result


def _read_reply(sock: socket.socket, on_progress: Progress | None) -> dict[str, Any]:
    """Lines until the final one (it has "ok"); progress lines go to `on_progress`."""
    buf = b""
    while True:
        while b"\n" not in buf:
            part = sock.recv(65536)
            if not part:
                if not buf:
                    raise AdminError("daemon closed the connection without answering")
                buf += b"\n"  # a last line without its newline
                break
            buf += part
        line, buf = buf.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            raise AdminError(f"daemon sent a reply that is not JSON: {line[:80]!r}") from None
        if not isinstance(reply, dict):
            raise AdminError(f"daemon sent a reply that is not JSON (an object): {line[:80]!r}")
        if "progress" in reply and "ok" not in reply:
            if on_progress is not None:
                on_progress(reply["progress"])
            continue
        return reply
