"""The daemons' admin API: JSON over a Unix socket, one request per line.

Request:  {"verb": "library.info", "args": {...}}
Reply:    {"ok": true, "result": ...}  or  {"ok": false, "error": "one line"}

The CLIs (and later the shell and HTTP) are thin skins over this; every
state-changing operation goes through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]
MAX_REQUEST = 1 << 20


class AdminError(Exception):
    """The daemon refused a request, or could not be reached."""


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    verbs: dict[str, Handler]


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST)
        try:
            request = json.loads(line)
            verb = request["verb"]
            args = request.get("args") or {}
            handler = self.server.verbs.get(verb)
            if handler is None:
                reply: dict[str, Any] = {"ok": False, "error": f"unknown verb {verb!r}"}
            else:
                reply = {"ok": True, "result": handler(args)}
        except AdminError as exc:
            reply = {"ok": False, "error": str(exc)}
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a bug must not kill the admin thread
            log.exception("admin request failed")
            reply = {"ok": False, "error": f"internal error: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class AdminServer:
    """Serves `verbs` on a Unix socket in a background thread."""

    def __init__(self, path: Path, verbs: dict[str, Handler], group: str | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        self._server = _Server(str(path), _RequestHandler)
        self._server.verbs = verbs
        os.chmod(path, 0o660)
        if group is not None:
            import grp

            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except KeyError:
                log.warning("group %s does not exist; admin socket stays root-only", group)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="admin", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def call(path: Path, verb: str, args: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    """Send one request; return its result or raise AdminError with the reason."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps({"verb": verb, "args": args or {}}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                part = sock.recv(65536)
                if not part:
                    break
                buf += part
    except FileNotFoundError:
        raise AdminError(f"daemon not running (no socket at {path})") from None
    except ConnectionRefusedError:
        raise AdminError(f"daemon not running (nobody listens on {path})") from None
    except PermissionError:
        raise AdminError(f"permission denied on {path} (run as root or in its group)") from None
    except TimeoutError:
        raise AdminError(f"daemon did not answer within {timeout:.0f} s") from None
    if not buf:
        raise AdminError("daemon closed the connection without answering")
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise AdminError(reply.get("error", "request refused"))
    return reply.get("result")
