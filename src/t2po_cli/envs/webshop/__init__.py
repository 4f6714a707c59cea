"""Embedded WebShop (envs.md §4): procedural catalogue, official page flow and purchase score.

``FAMILY`` bundles the env factory (embedded or the HTTP env-server adapter), the task sampler, the strict
think/action projection (no admissible check, §0.4), the prompt builder and the scripted policies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from t2po_cli.envs.base import EnvFamily, Projection, Task, TextEnv
from t2po_cli.envs.projection import project_think_action
from t2po_cli.envs.webshop.catalog import CATALOG_SEED, TEST_GOALS, build_catalog, catalog_size
from t2po_cli.envs.webshop.policies import demo_policy, expert_policy, random_policy
from t2po_cli.envs.webshop.prompt import TEMPLATE_VERSION, build_compact_prompt, build_prompt
from t2po_cli.errors import UserError


def make_env(cfg: Any) -> TextEnv:
    """An embedded env, or (``backend=real``) a client of a §4.7 env server at ``cfg.url``."""
    if cfg.backend == "embedded":
        from t2po_cli.envs.webshop.engine import WebShopEnv

        return WebShopEnv()
    if cfg.backend == "real":
        if not cfg.url:
            raise UserError("env.backend=real for webshop needs env.url (start one with `t2po serve webshop`)")
        from t2po_cli.envs.webshop.remote import WebShopHttpEnv

        return WebShopHttpEnv(cfg.url, timeout_s=cfg.timeout_s, retries=cfg.retries)
    raise UserError(f"unknown env.backend '{cfg.backend}'; choose embedded or real")


def sample_tasks(split: str, indices: Sequence[int], base_seed: int, difficulty: int = 1) -> list[Task]:
    """Tasks for goal indices: ``val`` walks goals 0-499 in order; ``train`` draws uniformly (without
    replacement within one pass, seeded by ``base_seed``) from goals 500 onwards (§4.1)."""
    size = catalog_size(difficulty)
    catalog = build_catalog(size, CATALOG_SEED)
    if split == "val":
        pool = list(range(min(TEST_GOALS, len(catalog.goals))))
    elif split == "train":
        pool = list(range(TEST_GOALS, len(catalog.goals)))
        random.Random(base_seed).shuffle(pool)
    else:
        raise UserError(f"unknown split '{split}'; choose train or val")
    tasks = []
    for i in indices:
        goal_idx = pool[i % len(pool)]
        tasks.append(Task(
            env="webshop", split=split, index=i, seed=base_seed,
            instruction=catalog.goals[goal_idx]["instruction_text"],
            payload={"goal_idx": goal_idx, "catalog_size": size, "catalog_seed": CATALOG_SEED},
        ))
    return tasks


def project(text: str, admissible: Sequence[str] | None) -> Projection:
    """Strict think/action; WebShop never checks admissibility (§0.4)."""
    return project_think_action(text, admissible, check_admissible=False)


FAMILY = EnvFamily(
    name="webshop",
    make_env=make_env,
    sample_tasks=sample_tasks,
    project=project,
    build_prompt=build_prompt,
    expert_policy=expert_policy,
    random_policy=random_policy,
    stop_strings=("</action>",),
    has_gold_answers=False,
    template_version=TEMPLATE_VERSION,
    max_turns=15,
    input_hint="type one action, e.g. search[red running shoes] or click[buy now]",
    demo_policy=demo_policy,
    extra_prompt_styles={"compact": build_compact_prompt},
)
