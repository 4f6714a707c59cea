"""Loopback HTTP plumbing shared by the real-backend clients and the servers (envs.md §4.7, §5.3).

Clients: one JSON POST/GET helper with a per-request timeout, a bounded number of retries with a linear
back-off, and a ``BackendUnavailable`` error (never a hang) once the retries are spent.

Servers: stdlib ``ThreadingHTTPServer`` handlers that bind 127.0.0.1 by default and reject any request
whose ``Host`` header is not loopback (or on an explicit allow-list). The Host check blocks DNS-rebinding:
a web page can make a browser POST to 127.0.0.1, but only with a foreign Host header.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from t2po_cli.errors import BackendUnavailable

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
RETRY_STATUS = frozenset({500, 502, 503, 504})
"""HTTP statuses worth retrying (Search-R1 client behaviour, §5.3); other errors fail at once."""
MAX_BODY_BYTES = 1 << 20


def request_json(url: str, body: dict[str, Any] | None = None, *, timeout_s: float, retries: int,
                 backoff_s: float = 1.0) -> Any:
    """POST ``body`` as JSON (GET when ``body`` is None) and decode the JSON reply.

    Args:
        url: full endpoint URL.
        body: JSON body; None sends a GET.
        timeout_s: per-attempt socket timeout.
        retries: extra attempts after the first on connection errors, timeouts and 5xx replies.
        backoff_s: linear back-off: attempt ``k`` waits ``k * backoff_s`` seconds first (§5.3).

    Raises:
        BackendUnavailable: the server could not be reached or kept failing; the message names the URL.
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    last = "no attempt made"
    for attempt in range(max(0, retries) + 1):
        if attempt:
            time.sleep(attempt * backoff_s)
        req = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
            return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code not in RETRY_STATUS:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e))
        except json.JSONDecodeError:
            last = "reply is not JSON"
            break
    raise BackendUnavailable(
        f"backend at {url} is unavailable ({last}) after {max(0, retries) + 1} attempt(s); start the server "
        "(`t2po serve ...`) or fix env.url"
    )


class JsonHandler(BaseHTTPRequestHandler):
    """Base handler: Host allow-list, JSON in and out, quiet logging. Subclasses implement ``route``."""

    allowed_hosts: frozenset[str] = LOOPBACK_HOSTS
    server_version = "t2po"
    protocol_version = "HTTP/1.1"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        if not self._host_allowed():
            self._send(403, {"error": "forbidden Host header; only loopback hosts or the --allow-host list"})
            return
        body: Any = None
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(413, {"error": "request body too large"})
                return
            try:
                body = json.loads(self.rfile.read(length) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                self._send(400, {"error": "body is not valid JSON"})
                return
        try:
            status, payload = self.route(method, self.path.split("?", 1)[0], body)
        except (KeyError, TypeError, ValueError) as e:
            status, payload = 400, {"error": f"bad request: {e}"}
        self._send(status, payload)

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):  # [::1]:port
            name = host.split("]", 1)[0] + "]"
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in self.allowed_hosts

    def _send(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logs (the CLI prints one line at start-up instead)."""


def make_server(handler: type[JsonHandler], host: str, port: int, allow_hosts: Iterable[str] = (),
                **state: Any) -> ThreadingHTTPServer:
    """Bind a fresh subclass of ``handler`` carrying ``state`` as class attributes to ``host:port``.

    A subclass per server keeps two servers in one process (tests) from sharing state. ``port=0`` picks a
    free ephemeral port; read it back with ``server_url``.
    """
    attrs = {"allowed_hosts": LOOPBACK_HOSTS | {h.lower() for h in allow_hosts}, **state}
    bound = type(handler.__name__, (handler,), attrs)
    server = ThreadingHTTPServer((host, port), bound)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server`` on a daemon thread (tests, in-process use); stop it with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, name="t2po-http", daemon=True)
    thread.start()
    return thread


def server_url(server: ThreadingHTTPServer) -> str:
    """``http://host:port`` of a bound server."""
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
