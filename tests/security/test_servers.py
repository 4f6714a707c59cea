"""Backend servers bind loopback by default and reject a foreign Host header unless it is allow-listed."""

from __future__ import annotations

import http.client
import inspect
import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from t2po_cli.cli import serve
from t2po_cli.envs.http_common import serve_in_thread
from t2po_cli.envs.searchqa.retriever import make_retriever_server
from t2po_cli.envs.webshop.remote import make_webshop_server

DOCS = [{"id": "0", "contents": "\"Paris\"\nParis is the capital of France."}]


def _factories() -> dict[str, object]:
    return {"webshop": make_webshop_server, "retriever": lambda **kw: make_retriever_server(DOCS, **kw)}


@pytest.fixture(params=["webshop", "retriever"])
def server(request: pytest.FixtureRequest) -> Iterator[ThreadingHTTPServer]:
    srv = _factories()[request.param](port=0, allow_hosts=["trusted.example"])  # type: ignore[operator]
    serve_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(srv: ThreadingHTTPServer, host: str | None) -> int:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=5)
    conn.putrequest("GET", "/health", skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    json.loads(resp.read())
    return resp.status


def test_factories_bind_loopback_by_default() -> None:
    for name, make in _factories().items():
        srv = make(port=0)  # type: ignore[operator]
        try:
            assert srv.server_address[0] == "127.0.0.1", name
        finally:
            srv.server_close()


def test_cli_serve_defaults_to_loopback() -> None:
    for cmd in (serve.webshop_cmd, serve.retriever_cmd):
        default = inspect.signature(cmd).parameters["host"].default
        assert getattr(default, "default", default) == "127.0.0.1", cmd.__name__


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]:80", "LOCALHOST:1234", "trusted.example:9"])
def test_loopback_and_allow_listed_hosts_accepted(server: ThreadingHTTPServer, host: str) -> None:
    assert _get(server, host) == 200


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example", "", None,
    "trusted.example.evil", "0.0.0.0", "10.0.0.1",
])
def test_foreign_host_rejected(server: ThreadingHTTPServer, host: str | None) -> None:
    assert _get(server, host) == 403
