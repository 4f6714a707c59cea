"""WebShop prompt templates (versioned data) and the per-turn prompt builder (envs.md §0.3, §4.5).

The wording belongs to the project (§0.3); what is pinned is the structure: persona + task, the history
block (step count + the last ``history_length`` entries as ``[Observation k: '…', Action k: '…']``), the
formatted current page, the quoted admissible actions, and the think/action output instruction. Every run
records ``TEMPLATE_VERSION``, a hash of ``TEMPLATES``, so a wording change is visible across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from t2po_cli.envs.base import HistoryEntry, Task
from t2po_cli.envs.webshop.engine import SEP, format_observation

TEMPLATES: dict[str, str] = {
    "no_history": (
        "You are an expert autonomous agent shopping on the WebShop e-commerce website.\n"
        "Your task is to: {task}.\n"
        "Your current observation is: {observation}.\n"
        "Your admissible actions of the current situation are:\n[\n{actions}\n].\n\n"
        "Now it's your turn to take one action for the current step.\n"
        "First reason step by step about the current page and which admissible action best advances the "
        "shopping goal; this reasoning MUST be enclosed within <think> </think> tags.\n"
        "Then choose exactly one admissible action and present it within <action> </action> tags."
    ),
    "history": (
        "You are an expert autonomous agent shopping on the WebShop e-commerce website.\n"
        "Your task is to: {task}.\n"
        "Prior to this step, you have already taken {step_count} step(s). Below are the most recent "
        "{history_count} observations and the corresponding actions you took: {history}\n"
        "You are now at step {current_step} and your current observation is: {observation}.\n"
        "Your admissible actions of the current situation are:\n[\n{actions}\n].\n\n"
        "Now it's your turn to take one action for the current step.\n"
        "First reason step by step about the current page and which admissible action best advances the "
        "shopping goal; this reasoning MUST be enclosed within <think> </think> tags.\n"
        "Then choose exactly one admissible action and present it within <action> </action> tags."
    ),
    # env.prompt_style=compact: ~4x fewer tokens for small CPU models (issue 18). What is cut is wording and
    # repetition, never page content: the page is shown whole (lower-cased, so a click copies its text
    # exactly), past observations are dropped for the last ``history_length`` actions, and the clickable
    # list is not repeated (every clickable is on the page; admissible-action decoding spells it).
    "compact": (
        "Task: {task}.\n"
        "Past actions: {history}\n"
        "Page: {observation}\n"
        "Actions: {actions}\n"
        "Answer <think>reason</think><action>one action</action>."
    ),
}
TEMPLATE_VERSION = "webshop-v1-" + hashlib.sha256(
    json.dumps(TEMPLATES, sort_keys=True).encode()
).hexdigest()[:12]
MAX_PROMPT_CHARS = 13_000
"""Above this the no-history template is used instead (§0.3)."""


COMPACT_PART_CHARS = 160
"""Compact style: a page part longer than this (a description or a review) is cut at a word boundary."""
COMPACT_PAGE_CHARS = 2400
"""Compact style: the page text is cut after this many characters (a results page takes ~1000)."""


def compact_page(raw: str, instruction: str) -> str:
    """The page as `` | ``-separated lower-case parts after the instruction (the goal text is dropped, as in
    ``format_observation``); long parts and long pages are cut at a word boundary with ``…``."""
    parts = raw.split(SEP)
    if instruction in parts:
        parts = parts[parts.index(instruction) + 1:]
    parts = [_cut(p.strip().lower(), COMPACT_PART_CHARS) for p in parts if p.strip()]
    return _cut(" | ".join(parts), COMPACT_PAGE_CHARS)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    return (head[: head.rfind(" ")] if " " in head else head) + " …"


def compact_actions(admissible: Sequence[str]) -> str:
    """What a compact prompt says about the actions: the search form, and clicks by what the page shows."""
    out = ["search[<your query>]"] if "search[<your query>]" in admissible else []
    if any(a.startswith("click[") for a in admissible):
        out.append("click[<text on the page>]")
    return ", ".join(out) or "none"


def build_compact_prompt(task: Task, history: Sequence[HistoryEntry], observation: str, info: dict[str, Any], *,
                         turn: int, history_length: int) -> str:
    """The ``compact`` user message for one WebShop turn: task, last ``history_length`` actions, page."""
    instruction = info.get("instruction") or task.instruction
    recent = list(history)[-history_length:] if history_length > 0 else []
    past = " > ".join(e.action for e in recent) if recent else "none"
    if len(history) > len(recent) and recent:
        past = "… > " + past
    return TEMPLATES["compact"].format(
        task=instruction, history=past, observation=compact_page(observation, instruction),
        actions=compact_actions(info.get("admissible") or []),
    )


def render_history(entries: Sequence[HistoryEntry], first_step: int, instruction: str) -> str:
    """``[Observation k: '<obs>', Action k: '<action>']`` lines, numbered from ``first_step``."""
    lines = []
    for k, entry in enumerate(entries, start=first_step):
        obs = format_observation(entry.observation, instruction)
        lines.append(f"\n[Observation {k}: '{obs}', Action {k}: '{entry.action}']")
    return "".join(lines)


def build_prompt(task: Task, history: Sequence[HistoryEntry], observation: str, info: dict[str, Any], *,
                 turn: int, history_length: int) -> str:
    """The user message for one WebShop turn (no chat template applied)."""
    # A real backend may serve its own goal text for the goal index; the page is cut at that text.
    instruction = info.get("instruction") or task.instruction
    actions = "\n".join(f"'{a}'," for a in info.get("admissible") or [])
    current = format_observation(observation, instruction)
    no_history = TEMPLATES["no_history"].format(task=instruction, observation=current, actions=actions)
    if turn == 0 or not history or history_length <= 0:
        return no_history
    recent = list(history)[-history_length:]
    prompt = TEMPLATES["history"].format(
        task=instruction,
        step_count=len(history),
        history_count=len(recent),
        history=render_history(recent, len(history) - len(recent) + 1, instruction),
        current_step=len(history) + 1,
        observation=current,
        actions=actions,
    )
    return no_history if len(prompt) > MAX_PROMPT_CHARS else prompt
