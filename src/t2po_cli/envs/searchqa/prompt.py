"""Search-QA prompt templates (versioned data) and the per-turn prompt builder (envs.md §0.3, §5.4).

Structure pinned by the spec: persona with a search tool + the question; after turn 0 a history block
(step count, then ``Step k:<action> <information>`` lines for the last ``history_length`` turns); the
think / search-or-answer instruction with a one-word example answer. ``TEMPLATE_VERSION`` hashes the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from t2po_cli.envs.base import HistoryEntry, Task

_INSTRUCTION = (
    "You should first reason step by step about what you know and what is missing; this reasoning MUST be "
    "enclosed within <think> </think> tags.\n"
    "Then do exactly one of the following (never both):\n"
    "(1) if any required knowledge is missing or uncertain, call the search engine with a query wrapped in "
    "<search> </search>;\n"
    "(2) only if you have enough information to answer with confidence, give the final answer wrapped in "
    "<answer> </answer>. The answer must be short, for example <answer>Paris</answer>."
)
TEMPLATES: dict[str, str] = {
    "no_history": (
        "You are an expert question-answering agent with access to a search engine.\n"
        "Your question: {question}\n\n"
        "Now it's your turn to respond.\n" + _INSTRUCTION
    ),
    "history": (
        "You are an expert question-answering agent with access to a search engine.\n"
        "Your question: {question}\n\n"
        "Prior to this step, you have already taken {step_count} step(s). Below is the interaction history, "
        "where <search> </search> wraps your past queries and <information> </information> wraps the "
        "results returned by the search engine:\n{history}\n\n"
        "Now it's your turn to respond for the current step.\n" + _INSTRUCTION
    ),
}
TEMPLATE_VERSION = "searchqa-v1-" + hashlib.sha256(
    json.dumps(TEMPLATES, sort_keys=True).encode()
).hexdigest()[:12]


def render_history(history: Sequence[HistoryEntry], observation: str, history_length: int) -> str:
    """``Step k:<action> <information>`` lines; each action's result is the next entry's observation
    (the current observation for the latest one), since an entry stores the observation it acted on."""
    results = [h.observation for h in history[1:]] + [observation]
    start = max(0, len(history) - history_length)
    return "\n".join(f"Step {k + 1}:{history[k].action} {results[k]}" for k in range(start, len(history)))


def build_prompt(task: Task, history: Sequence[HistoryEntry], observation: str, info: dict[str, Any], *,
                 turn: int, history_length: int) -> str:
    """The user message for one Search-QA turn (no chat template applied)."""
    if turn == 0 or not history or history_length <= 0:
        return TEMPLATES["no_history"].format(question=task.instruction)
    return TEMPLATES["history"].format(question=task.instruction, step_count=len(history),
                                       history=render_history(history, observation, history_length))
