"""Search-R1 compatible retrieval: in-process BM25, the HTTP server and the HTTP client (envs.md §5.3-§5.7).

* ``CorpusRetriever`` ranks ``{"id", "contents"}`` documents with bm25s (the embedded backend).
* ``make_retriever_server`` serves any corpus over ``POST /retrieve``, accepting both request forms (T2PO's
  ``{"query": …}`` and Search-R1's ``{"queries": […]}``) and both response shapes (``return_scores``).
* ``HttpRetriever`` is the client for ``env.backend=real``: any server that speaks §5.3 (e.g. Search-R1's
  e5 + FAISS server) works.
* ``format_information`` renders documents as the ``<information>`` observation (§5.4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from t2po_cli.envs.http_common import JsonHandler, make_server, request_json
from t2po_cli.envs.text_search import BM25Index
from t2po_cli.errors import UserError

DEFAULT_TOPK = 3


def format_information(contents: Sequence[str] | None, error: str | None = None) -> str:
    """The §5.4 observation: ``Doc i: {contents}\\n`` lines JSON-encoded inside ``<information>`` tags."""
    if error is not None:
        text = f"Search error: {error}"
    elif not contents:
        text = "No search results found."
    else:
        text = "".join(f"Doc {i}: {c}\n" for i, c in enumerate(contents, start=1))
    return "\n<information>" + json.dumps({"result": text}) + "</information>\n"


class CorpusRetriever:
    """BM25 over a fixed corpus of ``{"id", "contents", ...}`` documents."""

    def __init__(self, docs: Sequence[dict[str, Any]]) -> None:
        self.docs = list(docs)
        self._index = BM25Index([str(d.get("contents", "")) for d in self.docs])

    def search(self, query: str, topk: int = DEFAULT_TOPK) -> list[tuple[dict[str, Any], float]]:
        """Best-first (document, score) pairs with a positive score."""
        return [(self.docs[i], score) for i, score in self._index.search(query, topk)]

    def contents(self, query: str, topk: int = DEFAULT_TOPK) -> list[str]:
        """Just the passage texts, as the env needs them."""
        return [str(doc["contents"]) for doc, _ in self.search(query, topk)]


def load_corpus(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL corpus (one ``{"id", "contents"}`` object per line, the wiki-18 layout).

    Raises:
        UserError: missing file, bad JSON, or a line without ``contents``.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"corpus file {p} not found; create one with `t2po envs export-corpus --out {p}`")
    docs = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{n} is not valid JSON ({e.msg}); write one JSON object per line") from None
        if not isinstance(doc, dict) or "contents" not in doc:
            raise UserError(f'{p}:{n} has no "contents" field; each line needs {{"id", "contents"}}')
        doc.setdefault("id", str(len(docs)))
        docs.append(doc)
    if not docs:
        raise UserError(f"corpus file {p} is empty; it needs one JSON document per line")
    return docs


def retrieve_response(retriever: CorpusRetriever, body: Any) -> dict[str, Any]:
    """Answer one ``/retrieve`` body (either request form, §5.3).

    Raises:
        ValueError: neither ``query`` nor ``queries`` holds text (the handler replies 400).
    """
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    if "queries" in body:
        queries = body["queries"]
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise ValueError('"queries" must be a list of strings')
    elif isinstance(body.get("query"), str):
        queries = [body["query"]]
    else:
        raise ValueError('send {"query": "..."} or {"queries": ["...", ...]}')
    topk = int(body.get("topk", DEFAULT_TOPK))
    with_scores = bool(body.get("return_scores", False))
    result = []
    for q in queries:
        hits = retriever.search(q, topk)
        result.append([{"document": d, "score": s} for d, s in hits] if with_scores else [d for d, _ in hits])
    return {"result": result}


class RetrieverHandler(JsonHandler):
    """``POST /retrieve`` and ``GET /health`` over one ``CorpusRetriever`` (set by ``make_server``)."""

    retriever: CorpusRetriever

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/health":
            return 200, {"status": "ok", "documents": len(self.retriever.docs)}
        if method == "POST" and path == "/retrieve":
            return 200, retrieve_response(self.retriever, body)
        return 404, {"error": f"no route {method} {path}; use POST /retrieve or GET /health"}


def make_retriever_server(docs: Sequence[dict[str, Any]], host: str = "127.0.0.1", port: int = 0,
                          allow_hosts: Iterable[str] = ()) -> ThreadingHTTPServer:
    """A bound (not yet serving) retrieval server over ``docs``."""
    return make_server(RetrieverHandler, host, port, allow_hosts, retriever=CorpusRetriever(docs))


class HttpRetriever:
    """Client for a Search-R1 compatible ``/retrieve`` endpoint (T2PO request form, top-k 3).

    Args:
        url: the server (``http://host:port``) or its ``/retrieve`` endpoint.
        timeout_s: per-request timeout.
        retries: bounded retries on connection errors, timeouts and 5xx replies.
        backoff_s: linear back-off step between retries.
    """

    def __init__(self, url: str, *, timeout_s: float, retries: int, backoff_s: float = 1.0) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/retrieve") else base + "/retrieve"
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s

    def contents(self, query: str, topk: int = DEFAULT_TOPK) -> list[str]:
        """Passage texts for ``query``.

        Raises:
            BackendUnavailable: unreachable after the retries.
            ValueError: the reply does not have the §5.3 shape.
        """
        reply = request_json(self.url, {"query": query, "topk": topk, "return_scores": True},
                             timeout_s=self.timeout_s, retries=self.retries, backoff_s=self.backoff_s)
        try:
            items = reply["result"][0]
            return [str(it.get("document", it)["contents"]) for it in items]
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"retriever reply is not Search-R1 shaped: missing {e}") from None
