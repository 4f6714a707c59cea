"""Env families by name: every package under ``envs/`` that exposes ``FAMILY`` is one.

The package is the only place that names its env (design.md §1): its ``EnvFamily`` carries the name, the turn
limit, gold-answer support and the human-play hint, and config validation reads them from here. Adding an
env is one package plus one recipe (CONTRIBUTING.md, "Adding an env").
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterator

from t2po_cli.envs.base import EnvConfig, EnvFamily, HistoryEntry
from t2po_cli.errors import UserError


@functools.cache
def _families() -> dict[str, EnvFamily]:
    """Import every sub-package of ``t2po_cli.envs`` and keep those that expose ``FAMILY``."""
    import t2po_cli.envs as package

    found: dict[str, EnvFamily] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            continue
        family = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "FAMILY", None)
        if family is None:
            continue
        if family.name != info.name:
            raise RuntimeError(f"envs/{info.name}/ declares FAMILY.name={family.name!r}; they must be equal")
        found[family.name] = family
    return found


def env_names() -> tuple[str, ...]:
    """The registered env names, sorted."""
    return tuple(sorted(_families()))


def get_family(name: str) -> EnvFamily:
    """The family ``name``.

    Raises:
        UserError: unknown env name.
    """
    families = _families()
    if name not in families:
        raise UserError(f"unknown env '{name}'; choose one of {', '.join(sorted(families))}")
    return families[name]


def expert_dialogues(name: str, episodes: int, seed: int, *, history_length: int, max_turns: int | None = None,
                     split: str = "train", demonstrator: bool = False, prompt_style: str = "full"
                     ) -> Iterator[list[tuple[str, str]]]:
    """Scripted episodes as lists of (user prompt, assistant response) pairs.

    With ``demonstrator`` the family's warm-start demonstrator acts (the warm-start corpus: it uses only
    what the prompt shows); otherwise the expert (the tokenizer corpus). Deterministic given (name,
    episodes, seed). Runs the embedded backend in-process; ``max_turns`` None = the family's limit.
    """
    fam = get_family(name)
    build_prompt = fam.prompt_builder(prompt_style)
    tasks = fam.sample_tasks(split, list(range(episodes)), seed, 1)
    policy = fam.demonstrator(seed) if demonstrator else fam.expert_policy(seed)
    cfg = EnvConfig(name=name, backend="embedded", max_turns=max_turns)
    for task in tasks:
        env = fam.make_env(cfg)
        obs, info = env.reset(task)
        history: list[HistoryEntry] = []
        turns: list[tuple[str, str]] = []
        for t in range(fam.turn_limit(cfg)):
            prompt = build_prompt(task, history, obs, info, turn=t, history_length=history_length)
            response = policy(task, obs, info, t)
            turns.append((prompt, response))
            proj = fam.project(response, info.get("admissible"))
            history.append(HistoryEntry(observation=obs, action=proj.action))
            obs, _, done, info = env.step(proj.action)
            if done:
                break
        env.close()
        yield turns


def corpus_texts(envs: tuple[str, ...], episodes_per_env: int = 64, seed: int = 0) -> Iterator[str]:
    """Text from the prompts and expert responses of ``envs``, in that order (a tokenizer corpus)."""
    for name in envs:
        for turns in expert_dialogues(name, episodes_per_env, seed, history_length=2):
            for prompt, response in turns:
                yield prompt
                yield response
