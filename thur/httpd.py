"""The daemons' HTTP endpoint: /health, /metrics, /sessions, /info.

A stdlib `ThreadingHTTPServer` rather than prometheus_client's `start_http_server`:
that one serves only the registry (every path is /metrics), while we also answer
JSON routes, and we want the bind error (address in use) raised to the daemon at
start, an IPv6 listen address, and a clean `close()` on shutdown. The metrics body is
still prometheus_client's own encoder, negotiated from the Accept header (text
format, or OpenMetrics). Read-only and unauthenticated: bind it to a management
address (`http.listen`) or firewall it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from thur.config import ConfigError, HttpConfig

log = logging.getLogger(__name__)

# A route answers (HTTP status, JSON-able body).
Route = Callable[[], tuple[int, Any]]


@dataclass(frozen=True)
class Endpoints:
    """What the daemon serves: its registry and the JSON routes."""

    registry: CollectorRegistry
    health: Route
    sessions: Route
    info: Route


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never holds up shutdown
    endpoints: Endpoints


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "thur"

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        ep = self.server.endpoints
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(ep.registry))
                return
            routes = {"/health": ep.health, "/sessions": ep.sessions, "/info": ep.info}
            route = routes.get(path)
            if route is None:
                status, body = 404, {"error": f"no such path {path}",
                                     "paths": ["/health", "/metrics", "/sessions", "/info"]}
            else:
                status, body = route()
        except Exception as exc:
            log.exception("http %s failed", path)
            status, body = 500, {"error": str(exc)}
        data = (json.dumps(body, indent=1, sort_keys=True, default=str) + "\n").encode()
        self._send(status, "application/json", data)

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # Scrapes every 15 s would flood the journal at INFO.
        log.debug("%s " + format, self.address_string(), *args)


class HttpService:
    """The endpoint, bound at construction (errors name `http.listen`), served by `start`."""

    def __init__(self, config: HttpConfig, endpoints: Endpoints) -> None:
        host, port = config.listen.ip, config.listen.port
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            raise ConfigError("http.listen", str(config.listen),
                              f"an address this host can listen on ({exc.strerror})") from None
        self._server.endpoints = endpoints
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="thur-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
