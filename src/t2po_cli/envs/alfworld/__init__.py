"""ALFWorld (envs.md §3): the embedded procedural engine and the adapter to the real alfworld/textworld engine.

``FAMILY`` bundles the env factory (``embedded`` or ``real``), the seeded task sampler, the strict
think/action projection with the admissible check (§0.4, errata 12), the prompt builder and the scripted
expert and random policies.

Modules: ``world`` (generation), ``engine`` (dynamics, texts, admissible commands, goals), ``prompts``,
``experts``, ``gamefile`` (export as real ALFWorld game files), ``real`` (the real-engine adapter).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from t2po_cli.envs.alfworld.engine import MAX_STEPS, AlfworldEnv
from t2po_cli.envs.alfworld.experts import expert_policy, random_policy
from t2po_cli.envs.alfworld.prompts import TEMPLATE_VERSION, build_prompt
from t2po_cli.envs.alfworld.world import TASK_TYPES, generate_world
from t2po_cli.envs.base import EnvFamily, Projection, Task, TextEnv
from t2po_cli.envs.projection import project_think_action
from t2po_cli.errors import UserError

SPLITS = ("train", "val")


def task_seed(split: str, base_seed: int, index: int) -> int:
    """World seed for one task: a stable hash, so train and val never share a world (§3.1)."""
    digest = hashlib.sha256(f"alfworld|{split}|{base_seed}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_task(split: str, index: int, base_seed: int, difficulty: int = 1,
              task_type: str | None = None) -> Task:
    """One task; the task type cycles through the six types with the index unless given."""
    task_type = task_type or TASK_TYPES[index % len(TASK_TYPES) + 1]
    seed = task_seed(split, base_seed, index)
    world = generate_world(seed, task_type, difficulty)
    return Task(
        env="alfworld", split=split, index=index, seed=seed, instruction=world.goal,
        payload={"task_type": task_type, "task_type_id": world.task_type_id, "difficulty": difficulty},
    )


def sample_tasks(split: str, indices: Sequence[int], base_seed: int, difficulty: int = 1) -> list[Task]:
    """Deterministic tasks for ``indices`` of ``split`` (``train`` or ``val``).

    Raises:
        UserError: unknown split.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' for alfworld; choose one of {', '.join(SPLITS)}")
    return [make_task(split, int(i), base_seed, difficulty) for i in indices]


def make_env(cfg: Any) -> TextEnv:
    """An embedded env, or (``backend=real``) the real alfworld/textworld engine in a spawned worker (§3.12).

    The episode limit is ALFWorld's own 50 steps (§3.7), independent of ``env.max_turns``, as TextWorld's
    ``max_episode_steps`` is in the release.
    """
    if cfg.backend == "embedded":
        return AlfworldEnv(max_steps=MAX_STEPS)
    if cfg.backend == "real":
        from t2po_cli.envs.alfworld.real import RealAlfworldEnv

        return RealAlfworldEnv(timeout_s=cfg.timeout_s, max_steps=MAX_STEPS)
    raise UserError(f"unknown env.backend '{cfg.backend}'; choose embedded or real")


def project(text: str, admissible: Sequence[str] | None) -> Projection:
    """Strict think/action; ALFWorld checks the action against the admissible list, ``help`` included."""
    return project_think_action(text, admissible, check_admissible=True)


FAMILY = EnvFamily(
    name="alfworld",
    make_env=make_env,
    sample_tasks=sample_tasks,
    project=project,
    build_prompt=build_prompt,
    expert_policy=expert_policy,
    random_policy=random_policy,
    stop_strings=("</action>",),
    has_gold_answers=False,
    template_version=TEMPLATE_VERSION,
    max_turns=50,
    input_hint="type one admissible command, e.g. go to cabinet 1 or take apple 1 from countertop 1",
)

__all__ = ["FAMILY", "SPLITS", "make_env", "make_task", "project", "sample_tasks", "task_seed"]
