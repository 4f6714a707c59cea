"""Embedded Search-QA (envs.md §5): procedural knowledge base, in-process bm25s, Search-R1 tags and EM.

``FAMILY`` bundles the env factory (embedded BM25 or a Search-R1 compatible server at ``env.url``), the
task sampler, the search projection (errata 11), the prompt builder, the scripted policies and the A2TGPO
forced-answer text.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Any

from t2po_cli.envs.base import EnvFamily, Projection, Task, TextEnv
from t2po_cli.envs.projection import project_search
from t2po_cli.envs.searchqa.kb import KB_SEED, VAL_QUESTIONS, build_kb, kb_scale
from t2po_cli.envs.searchqa.policies import expert_policy, random_policy
from t2po_cli.envs.searchqa.prompt import TEMPLATE_VERSION, build_prompt
from t2po_cli.errors import UserError

FORCED_ANSWER_PROMPT = "\nNow there's enough information to answer\n</think>\n<answer>\n"
"""The released A2TGPO ``answer_prefix`` (a2tgpo.md §2.1): closes the thought and opens the answer."""


@functools.lru_cache(maxsize=4)
def _embedded_retriever(scale: int, seed: int) -> Any:
    from t2po_cli.envs.searchqa.retriever import CorpusRetriever

    return CorpusRetriever(build_kb(scale, seed).docs)


def make_env(cfg: Any) -> TextEnv:
    """In-process BM25 over the generated KB, or (``backend=real``) a Search-R1 server at ``cfg.url``.

    Raises:
        UserError: real backend without ``env.url``.
        BackendUnavailable: the real retriever does not answer a probe query (checked here, so a dead
            server stops the run at start-up instead of filling every episode with "Search error").
    """
    from t2po_cli.envs.searchqa.env import SearchQAEnv

    if cfg.backend == "embedded":
        retriever = _embedded_retriever(kb_scale(cfg.difficulty), KB_SEED)
        return SearchQAEnv(retriever.contents)
    if cfg.backend == "real":
        if not cfg.url:
            raise UserError("env.backend=real for searchqa needs env.url (e.g. `t2po serve retriever "
                            "--corpus FILE.jsonl` prints one)")
        from t2po_cli.envs.searchqa.retriever import HttpRetriever

        client = HttpRetriever(cfg.url, timeout_s=cfg.timeout_s, retries=cfg.retries)
        _probe(client)
        return SearchQAEnv(client.contents)
    raise UserError(f"unknown env.backend '{cfg.backend}'; choose embedded or real")


_PROBED: set[str] = set()


def _probe(client: Any) -> None:
    """One query per URL and process: raises BackendUnavailable when the server is down."""
    if client.url not in _PROBED:
        client.contents("probe", 1)
        _PROBED.add(client.url)


def sample_tasks(split: str, indices: Sequence[int], base_seed: int, difficulty: int = 1) -> list[Task]:
    """``val`` walks the first questions in order; ``train`` permutes the rest with ``base_seed``."""
    scale = kb_scale(difficulty)
    kb = build_kb(scale, KB_SEED)
    if split == "val":
        pool = list(range(VAL_QUESTIONS))
    elif split == "train":
        pool = list(range(VAL_QUESTIONS, len(kb.questions)))
        random.Random(base_seed).shuffle(pool)
    else:
        raise UserError(f"unknown split '{split}'; choose train or val")
    tasks = []
    for i in indices:
        q = kb.questions[pool[i % len(pool)]]
        tasks.append(Task(
            env="searchqa", split=split, index=i, seed=base_seed, instruction=q["question"],
            gold_answers=tuple(q["golden_answers"]),
            payload={"question_idx": pool[i % len(pool)], "data_source": q["data_source"], "hops": q["hops"],
                     "kb_scale": scale},
        ))
    return tasks


def project(text: str, admissible: Sequence[str] | None) -> Projection:
    """Search-R1 tags (§0.4, errata 11); there is no admissible list."""
    return project_search(text)


FAMILY = EnvFamily(
    name="searchqa",
    make_env=make_env,
    sample_tasks=sample_tasks,
    project=project,
    build_prompt=build_prompt,
    expert_policy=expert_policy,
    random_policy=random_policy,
    stop_strings=("</search>", "</answer>"),
    has_gold_answers=True,
    template_version=TEMPLATE_VERSION,
    max_turns=4,
    input_hint="type <search>a query</search> or <answer>the answer</answer>",
    human_template="{line}",
    forced_answer_prompt=FORCED_ANSWER_PROMPT,
)
