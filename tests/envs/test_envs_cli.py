"""``t2po envs`` and ``t2po serve`` from the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from t2po_cli.cli.app import main
from t2po_cli.envs.http_common import request_json


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_list_json(capsys):
    rows = {r["name"]: r for r in _json(capsys, ["envs", "list", "--json"])}
    assert set(rows) == {"webshop", "alfworld", "searchqa"}
    assert rows["webshop"]["available"] and rows["webshop"]["template_version"].startswith("webshop-v1-")
    assert rows["searchqa"]["gold_answers"] is True and rows["searchqa"]["max_turns"] == 4


@pytest.mark.parametrize(("env", "policy", "ok"), [
    ("webshop", "expert", lambda r: r >= 0.99), ("webshop", "random", lambda r: r < 0.10),
    ("searchqa", "expert", lambda r: r >= 0.99), ("searchqa", "random", lambda r: r < 0.10),
])
def test_play_json(capsys, env, policy, ok):
    out = _json(capsys, ["envs", "play", "--env", env, "--policy", policy, "--episodes", "30", "--json"])
    assert {"success_rate", "episodes", "mean_turns", "invalid_rate"} <= set(out)
    assert out["episodes"] == 30 and ok(out["success_rate"])
    assert out["invalid_rate"] == 0.0 and out["mean_turns"] >= 1


def test_play_human_reads_actions_from_stdin(capsys, monkeypatch):
    from t2po_cli.envs.searchqa import FAMILY

    task = FAMILY.sample_tasks("val", [0], 0, 1)[0]
    lines = [f"<search>{h['query']}</search>\n" for h in task.payload["hops"]]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(lines) + f"<answer>{task.gold_answers[0]}</answer>\n"))
    out = _json(capsys, ["envs", "play", "--env", "searchqa", "--policy", "human", "--episodes", "1", "--json"])
    assert out["success_rate"] == 1.0 and out["mean_turns"] == len(lines) + 1


def test_play_human_webshop_quit(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("search[green tea]\nquit\n"))
    assert main(["envs", "play", "--env", "webshop", "--policy", "human", "--episodes", "3", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["episodes"] == 0 and out["mean_turns"] == 0.0  # quit before finishing the first episode
    assert "admissible: search[<your query>] | click[search]" in captured.err
    assert "'Back to Search' [SEP] 'Page 1 (Total results:" in captured.err  # the page after the search


@pytest.mark.parametrize(("env", "typed", "example"), [
    ("webshop", "search[shirt]", "e.g. search[red running shoes] or click[buy now]"),
    ("alfworld", "look", "e.g. go to cabinet 1"),
    ("searchqa", "<search>capital</search>", "<search>a query</search> or <answer>the answer</answer>"),
])
def test_play_human_shows_the_goal_first_and_an_example_of_this_env(env, typed, example, tmp_path):
    """A person sees what to achieve before the first screen (WebShop's first page shows only 'Search'), and
    the input hint gives an action of this env. Driven through stdin of the real command."""
    from t2po_cli.envs.registry import get_family

    task = get_family(env).sample_tasks("val", [0], 0, 1)[0]
    r = subprocess.run([sys.executable, "-m", "t2po_cli", "envs", "play", "--env", env, "--policy", "human",
                        "--episodes", "1"], input=f"{typed}\nquit\n", capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    screen = " ".join(r.stderr.split())  # Rich wraps long lines at the terminal width
    goal = " ".join(f"goal: {task.instruction}".split())
    assert goal in screen
    assert screen.index(goal) < screen.index("> ")  # shown before the first prompt for an action
    assert example in screen
    if env != "webshop":
        assert "search[red shoes]" not in screen  # the old WebShop-only hint on every env


@pytest.mark.parametrize(("argv", "message"), [
    (["envs", "play", "--env", "webshop", "--policy", "smart"], "--policy"),
    (["envs", "play", "--env", "nope"], "unknown env"),
    (["envs", "play", "--env", "searchqa", "--backend", "real"], "--url"),
    (["envs", "export-corpus", "--env", "webshop", "--out", "x.jsonl"], "searchqa"),
    (["serve", "retriever", "--corpus", "/nonexistent/c.jsonl"], "export-corpus"),
])
def test_user_errors_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["envs"], ["envs", "list"], ["envs", "play"], ["envs", "export-corpus"],
                                  ["serve"], ["serve", "retriever"], ["serve", "webshop"]])
def test_help_has_example(capsys, argv):
    assert main([*argv, "--help"]) == 0
    assert "Example:" in capsys.readouterr().out


def test_cli_modules_do_not_import_torch():
    code = ("import sys, t2po_cli.cli.envs, t2po_cli.cli.serve; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_export_corpus_then_serve_retriever(tmp_path, capsys):
    corpus = tmp_path / "kb.jsonl"
    assert main(["envs", "export-corpus", "--env", "searchqa", "--out", str(corpus)]) == 0
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    assert len(docs) > 500 and set(docs[0]) == {"id", "contents"}
    proc = subprocess.Popen([sys.executable, "-m", "t2po_cli", "serve", "retriever", "--corpus", str(corpus),
                             "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on http://127.0.0.1:" in line
        url = line.strip().rsplit(" ", 1)[-1]
        from t2po_cli.envs.searchqa import FAMILY

        task = FAMILY.sample_tasks("val", [0], 0, 1)[0]
        hop = task.payload["hops"][0]
        reply = request_json(f"{url}/retrieve", {"query": hop["query"], "topk": 3, "return_scores": True},
                             timeout_s=10, retries=0)
        assert hop["doc_id"] in [hit["document"]["id"] for hit in reply["result"][0]]
        out = _json(capsys, ["envs", "play", "--env", "searchqa", "--backend", "real", "--url", url,
                             "--episodes", "10", "--json"])
        assert out["success_rate"] == 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
