"""``t2po envs``: list the environment families, play episodes (human, expert, random), export a corpus."""

from __future__ import annotations

import sys
from typing import Any

import typer

from t2po_cli.errors import UserError

POLICIES = ("human", "expert", "demo", "random")

envs_app = typer.Typer(
    help="Inspect and play the environment families.\n\nExample: t2po envs list",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _families() -> list[tuple[str, Any]]:
    """(name, family or None when its module is not installed yet)."""
    from t2po_cli.envs.registry import env_names, get_family

    out = []
    for name in env_names():
        try:
            out.append((name, get_family(name)))
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("t2po_cli.envs"):
                raise
            out.append((name, None))
        except AttributeError:  # the family package exists but does not expose FAMILY yet
            out.append((name, None))
    return out


@envs_app.command("list")
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print the listing as JSON on stdout.")) -> None:
    """List the environment families, their prompt-template versions and backends.

    Example: t2po envs list --json
    """
    from rich.table import Table

    from t2po_cli.console import emit_json, err, hint

    rows = []
    for name, fam in _families():
        rows.append({
            "name": name,
            "available": fam is not None,
            "template_version": fam.template_version if fam else None,
            "max_turns": fam.max_turns if fam else None,
            "stop_strings": list(fam.stop_strings) if fam else [],
            "gold_answers": bool(fam and fam.has_gold_answers),
        })
    if json_out:
        emit_json(rows)
        return
    table = Table(title="t2po environments")
    for col in ("env", "available", "template", "max turns", "gold answers"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], "yes" if r["available"] else "not installed", str(r["template_version"]),
                      str(r["max_turns"]), "yes" if r["gold_answers"] else "no")
    err.print(table)
    hint("t2po envs play --env webshop --policy expert --episodes 20")


def _show_goal(task: Any) -> None:
    """The task a person is asked to solve, before its first screen (WebShop's first page shows only 'Search')."""
    from t2po_cli.console import err

    err.rule("new episode")
    err.print(f"goal: {task.instruction}", highlight=False, markup=False)


def _human_response(fam: Any, obs: str, info: dict[str, Any]) -> str | None:
    """Show the page and the admissible actions; read one action line (None on EOF or 'quit')."""
    from t2po_cli.console import err

    err.rule()
    err.print(info.get("anchor_obs") or obs, highlight=False, markup=False)
    if info.get("admissible"):
        err.print("admissible: " + " | ".join(info["admissible"]), highlight=False, markup=False)
    err.print(f"{fam.input_hint} (quit to stop)", markup=False)
    err.print("> ", end="", markup=False)
    line = sys.stdin.readline()
    if not line or line.strip() == "quit":
        return None
    # The typed line goes through the same projection as the model's text (EnvFamily.human_template).
    return fam.human_template.format(line=line.strip())


def run_episodes(env: str, policy: str, episodes: int, seed: int, backend: str, url: str | None,
                 split: str = "val", max_turns: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Play ``episodes`` tasks and return success rate, mean turns, invalid-action rate and mean reward."""
    from t2po_cli.envs.base import EnvConfig
    from t2po_cli.envs.registry import get_family

    fam = get_family(env)
    cfg = EnvConfig(name=env, backend=backend, url=url, max_turns=max_turns)
    turns_cap = fam.turn_limit(cfg)
    tasks = fam.sample_tasks(split, list(range(episodes)), seed, 1)
    makers = {"expert": fam.expert_policy, "demo": fam.demonstrator, "random": fam.random_policy}
    act = None if policy == "human" else makers[policy](seed)
    wins = turns = invalid = 0
    reward_sum = 0.0
    played = 0
    with _progress(progress and policy != "human", episodes, f"{env} {policy}") as advance:
        for task in tasks:
            game = fam.make_env(cfg)
            try:
                obs, info = game.reset(task)
                if act is None:
                    _show_goal(task)
                for t in range(turns_cap):
                    response = _human_response(fam, obs, info) if act is None else act(task, obs, info, t)
                    if response is None:
                        return _summary(env, policy, played, wins, turns, invalid, reward_sum)
                    proj = fam.project(response, info.get("admissible"))
                    invalid += not proj.valid
                    turns += 1
                    obs, reward, done, info = game.step(proj.action)
                    reward_sum += reward
                    if done:
                        break
            finally:
                game.close()
            played += 1
            wins += bool(info["won"])
            advance()
    return _summary(env, policy, played, wins, turns, invalid, reward_sum)


def _summary(env: str, policy: str, played: int, wins: int, turns: int, invalid: int,
             reward_sum: float) -> dict[str, Any]:
    return {
        "env": env,
        "policy": policy,
        "episodes": played,
        "success_rate": wins / played if played else 0.0,
        "mean_turns": turns / played if played else 0.0,
        "invalid_rate": invalid / turns if turns else 0.0,
        "mean_reward": reward_sum / played if played else 0.0,
    }


class _progress:
    """A Rich progress bar on stderr (hidden when stderr is not a terminal); yields ``advance()``."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self) -> Any:
        from rich.progress import Progress

        from t2po_cli.console import err

        self._bar = Progress(console=err, transient=True, disable=not (self.enabled and err.is_terminal))
        self._bar.start()
        task_id = self._bar.add_task(self.label, total=self.total)
        return lambda: self._bar.advance(task_id)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


@envs_app.command("play")
def play_cmd(
    env: str = typer.Option(..., "--env", help="An env family (`t2po envs list`), e.g. webshop."),
    policy: str = typer.Option(
        "expert", "--policy", help="human (you type actions), expert, demo (the warm-start demonstrator) or random."
    ),
    episodes: int = typer.Option(20, "--episodes", min=1, help="Episodes (tasks) to play."),
    seed: int = typer.Option(0, "--seed", help="Task and policy seed."),
    backend: str = typer.Option("embedded", "--backend", help="embedded (in-process) or real (HTTP/real engine)."),
    url: str = typer.Option(None, "--url", help="Server URL for --backend real."),
    split: str = typer.Option("val", "--split", help="Task split: val or train."),
    max_turns: int = typer.Option(None, "--max-turns", min=1, help="Turn limit (default: the env's, §1)."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON on stdout."),
) -> None:
    """Play episodes with a scripted policy (success rate, mean turns, invalid rate) or interactively.

    Example: t2po envs play --env webshop --policy expert --episodes 200 --json
    """
    from t2po_cli.console import emit_json, err, hint

    if policy not in POLICIES:
        raise UserError(f"unknown --policy '{policy}'; choose one of {', '.join(POLICIES)}")
    if backend not in ("embedded", "real"):
        raise UserError(f"unknown --backend '{backend}'; choose embedded or real")
    if backend == "real" and not url and env != "alfworld":
        raise UserError(f"--backend real needs --url (e.g. start `t2po serve "
                        f"{'retriever' if env == 'searchqa' else 'webshop'}` and pass its URL)")
    if split not in ("train", "val"):
        raise UserError(f"unknown --split '{split}'; choose train or val")
    result = run_episodes(env, policy, episodes, seed, backend, url, split, max_turns)
    if json_out:
        emit_json(result)
        return
    err.print(f"{env} / {policy}: success {result['success_rate']:.3f} over {result['episodes']} episodes, "
              f"mean turns {result['mean_turns']:.2f}, invalid-action rate {result['invalid_rate']:.3f}")
    hint(f"t2po train --env {env}")


@envs_app.command("export-corpus")
def export_corpus_cmd(
    out: str = typer.Option(..., "--out", help="Output JSONL file (one {id, contents} per line)."),
    env: str = typer.Option("searchqa", "--env", help="Only searchqa has a retrieval corpus."),
    difficulty: int = typer.Option(1, "--difficulty", min=1, help="Knowledge-base scale."),
) -> None:
    """Write the embedded Search-QA knowledge base as a retriever corpus (wiki-18 JSONL layout).

    Example: t2po envs export-corpus --env searchqa --out corpus.jsonl
    """
    import json
    from pathlib import Path

    from t2po_cli.console import err, hint

    if env != "searchqa":
        raise UserError(f"--env {env} has no retrieval corpus; use --env searchqa")
    from t2po_cli.envs.searchqa.kb import KB_SEED, build_kb, kb_scale

    path = Path(out)
    if not path.parent.is_dir():
        raise UserError(f"folder {path.parent} does not exist; create it or choose another --out")
    docs = build_kb(kb_scale(difficulty), KB_SEED).docs
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    err.print(f"wrote {len(docs)} documents to {path}")
    hint(f"t2po serve retriever --corpus {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(envs_app, name="envs")
