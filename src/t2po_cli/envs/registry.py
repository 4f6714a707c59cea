"""Look up env families by name (lazily: each family module is imported on first use)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from t2po_cli.envs.base import EnvFamily, HistoryEntry
from t2po_cli.errors import UserError

FAMILY_MODULES = {
    "webshop": "t2po_cli.envs.webshop",
    "alfworld": "t2po_cli.envs.alfworld",
    "searchqa": "t2po_cli.envs.searchqa",
}


def env_names() -> tuple[str, ...]:
    return tuple(FAMILY_MODULES)


def get_family(name: str) -> EnvFamily:
    """The family ``name``; each family module exposes ``FAMILY: EnvFamily``.

    Raises:
        UserError: unknown env name.
    """
    if name not in FAMILY_MODULES:
        raise UserError(f"unknown env '{name}'; choose one of {', '.join(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY


def expert_dialogues(name: str, episodes: int, seed: int, *, history_length: int, max_turns: int,
                     split: str = "train", demonstrator: bool = False) -> Iterator[list[tuple[str, str]]]:
    """Scripted episodes as lists of (user prompt, assistant response) pairs.

    With ``demonstrator`` the family's warm-start demonstrator acts (the warm-start corpus: it uses only
    what the prompt shows); otherwise the expert (the tokenizer corpus). Deterministic given (name,
    episodes, seed). Runs the embedded backend in-process.
    """
    from t2po_cli.config.schema import EnvConfig

    fam = get_family(name)
    tasks = fam.sample_tasks(split, list(range(episodes)), seed, 1)
    policy = fam.demonstrator(seed) if demonstrator else fam.expert_policy(seed)
    for task in tasks:
        env = fam.make_env(EnvConfig(name=name, backend="embedded"))
        obs, info = env.reset(task)
        history: list[HistoryEntry] = []
        turns: list[tuple[str, str]] = []
        for t in range(max_turns):
            prompt = fam.build_prompt(task, history, obs, info, turn=t, history_length=history_length)
            response = policy(task, obs, info, t)
            turns.append((prompt, response))
            proj = fam.project(response, info.get("admissible"))
            history.append(HistoryEntry(observation=obs, action=proj.action))
            obs, _, done, info = env.step(proj.action)
            if done:
                break
        env.close()
        yield turns


def corpus_texts(episodes_per_env: int = 64, seed: int = 0) -> Iterator[str]:
    """Text from every family's prompts and expert responses (tokenizer training corpus)."""
    for name in FAMILY_MODULES:
        max_turns = {"webshop": 15, "alfworld": 50, "searchqa": 4}[name]
        for turns in expert_dialogues(name, episodes_per_env, seed, history_length=2, max_turns=max_turns):
            for prompt, response in turns:
                yield prompt
                yield response
