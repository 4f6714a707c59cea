"""``t2po serve``: loopback HTTP servers for the real backends (Search-R1 retriever, WebShop env server)."""

from __future__ import annotations

from typing import Any

import typer

from t2po_cli.errors import UserError

serve_app = typer.Typer(
    help="Run backend servers on 127.0.0.1.\n\nExample: t2po serve retriever --corpus corpus.jsonl",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _run(server: Any, what: str, next_cmd: str) -> None:
    """Print where the server listens (stderr), then serve until Ctrl-C."""
    from t2po_cli.console import err, hint
    from t2po_cli.envs.http_common import server_url

    url = server_url(server)
    err.print(f"{what} listening on {url}", soft_wrap=True, highlight=False, markup=False)
    hint(next_cmd.format(url=url))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err.print("stopped")
    finally:
        server.server_close()


def _bind(factory: Any, host: str, port: int, **kwargs: Any) -> Any:
    from t2po_cli.console import err

    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] binding {host} exposes the server beyond this machine")
    try:
        return factory(host=host, port=port, **kwargs)
    except OSError as e:
        raise UserError(f"cannot bind {host}:{port} ({e.strerror}); choose another --port (0 picks a free one)") \
            from None


@serve_app.command("retriever")
def retriever_cmd(
    corpus: str = typer.Option(..., "--corpus", help="JSONL corpus, one {id, contents} per line."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Extra accepted Host header names."),
) -> None:
    """Serve a Search-R1 compatible BM25 retriever (POST /retrieve, GET /health).

    Example: t2po serve retriever --corpus corpus.jsonl --port 8000
    """
    from t2po_cli.envs.searchqa.retriever import load_corpus, make_retriever_server

    docs = load_corpus(corpus)
    server = _bind(make_retriever_server, host, port, docs=docs, allow_hosts=allow_host)
    _run(server, f"retriever over {len(docs)} documents",
         "t2po envs play --env searchqa --backend real --url {url}/retrieve")


@serve_app.command("webshop")
def webshop_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(3000, "--port", min=0, max=65535, help="Port (0 picks a free one)."),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Extra accepted Host header names."),
    max_envs: int = typer.Option(512, "--max-envs", min=1, help="Cap on concurrently open environments."),
) -> None:
    """Serve the embedded WebShop over the env-server protocol (/reset, /step, /close, /health).

    Example: t2po serve webshop --port 3000
    """
    from t2po_cli.envs.webshop.remote import make_webshop_server

    server = _bind(make_webshop_server, host, port, allow_hosts=allow_host, max_envs=max_envs)
    _run(server, "webshop env server", "t2po envs play --env webshop --backend real --url {url}")


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
