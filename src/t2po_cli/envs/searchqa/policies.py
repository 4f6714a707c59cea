"""Scripted Search-QA policies: an expert that follows each question's hops and a random baseline."""

from __future__ import annotations

import random
import re
from typing import Any

from t2po_cli.envs.base import Policy, Task

_WORD = re.compile(r"[A-Za-z0-9]+")


def expert_policy(seed: int) -> Policy:
    """Search each hop's canonical query in turn, then answer with the first gold answer."""

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        hops = task.payload["hops"]
        if turn < len(hops):
            hop = hops[turn]
            known = f"I learned that the answer to the previous step is {hops[turn - 1]['answer']}. " \
                if turn else ""
            return f"<think>{known}I need to look up: {hop['query']}.</think>\n<search> {hop['query']} </search>"
        return (f"<think>The information shows the answer is {task.gold_answers[0]}.</think>\n"
                f"<answer> {task.gold_answers[0]} </answer>")

    return act


def random_policy(seed: int) -> Policy:
    """Each turn: search 2-3 random question words, or answer one random word seen so far (50/50)."""
    rng = random.Random(seed)

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        q_words = _WORD.findall(task.instruction) or ["question"]
        if rng.random() < 0.5:
            query = " ".join(rng.sample(q_words, min(len(q_words), rng.randint(2, 3))))
            return f"<think>Let me search.</think>\n<search> {query} </search>"
        words = q_words + _WORD.findall(obs)
        return f"<think>I will guess.</think>\n<answer> {rng.choice(words)} </answer>"

    return act
