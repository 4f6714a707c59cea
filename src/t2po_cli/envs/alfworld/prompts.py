"""ALFWorld prompt builder (envs.md §0.3, §3.9); the wording is versioned package data.

The templates live in ``data/alfworld/prompts_v1.json``; ``TEMPLATE_VERSION`` carries a hash of them so every
run records exactly which wording it trained on (§0.3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from t2po_cli.envs.base import HistoryEntry, Task

_DATA = json.loads(
    resources.files("t2po_cli").joinpath("data/alfworld/prompts_v1.json").read_text(encoding="utf-8")
)
TEMPLATES: dict[str, str] = dict(_DATA["templates"])
TEMPLATE_VERSION = f"{_DATA['version']}-" + hashlib.sha256(
    json.dumps(TEMPLATES, sort_keys=True).encode()
).hexdigest()[:12]
TASK_MARKER = "Your task is to: "


def task_from_intro(intro_obs: str) -> str:
    """The task is the text after ``Your task is to: `` in the first observation, final period dropped (§3.9)."""
    return intro_obs.split(TASK_MARKER, 1)[-1].strip().removesuffix(".")


def render_actions(admissible: Sequence[str] | None) -> str:
    """Quoted, one per line, ``help`` removed (§3.9); validity is still checked against the full list."""
    shown = [a for a in (admissible or []) if a != "help"]
    return ",\n".join(TEMPLATES["admissible_entry"].format(action=a) for a in shown)


def build_prompt(task: Task, history: Sequence[HistoryEntry], observation: str, info: dict[str, Any], *,
                 turn: int, history_length: int) -> str:
    """The user message for one ALFWorld turn (no chat template applied).

    Turn 0 (or no history) uses the no-history template with the full intro; later turns show the step count,
    the last ``history_length`` ``[Observation k: …, Action k: …]`` entries and the latest feedback (§0.3).
    """
    actions = render_actions(info.get("admissible"))
    if turn == 0 or not history or history_length <= 0:
        return TEMPLATES["no_history"].format(task=task.instruction, observation=observation, actions=actions)
    recent = list(history)[-history_length:]
    first = len(history) - len(recent) + 1
    rendered = "".join(
        TEMPLATES["history_entry"].format(k=k, observation=entry.observation, action=entry.action)
        for k, entry in enumerate(recent, start=first)
    )
    return TEMPLATES["history"].format(
        task=task.instruction,
        step_count=len(history),
        history_count=len(recent),
        history=rendered,
        current_step=len(history) + 1,
        observation=observation,
        actions=actions,
    )
