"""The Search-QA episode and its exact-match reward (envs.md §5.2, §5.4, §5.5).

The env receives projected actions (``<search>q</search>``, ``<answer>a</answer>`` or ``""``). A search
returns the ``<information>`` string; anything else returns ``""``; the episode ends on an answer or on the
4th turn, and only then is the reward computed from the **last** ``<answer>`` in the whole history.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

from t2po_cli.envs.base import Task
from t2po_cli.envs.searchqa.retriever import DEFAULT_TOPK, format_information
from t2po_cli.errors import BackendUnavailable

MAX_TURNS = 4
"""Search-R1's ``max_turns``: the fourth turn ends the episode whatever it contains (§5.2)."""
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)  # released extract_solution: case-sensitive
_SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)
_PUNCT = str.maketrans("", "", string.punctuation)

Retrieve = Callable[[str, int], list[str]]
"""``(query, topk) -> passage contents``; raises on a retrieval failure."""


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop whole-word articles, collapse whitespace (§5.5)."""
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def last_answer(history: str) -> str | None:
    """Content of the last ``<answer>…</answer>`` in the transcript (stripped), or None."""
    matches = list(_ANSWER.finditer(history))
    return matches[-1].group(1).strip() if matches else None


class SearchQAEnv:
    """One Search-QA episode (implements ``TextEnv``).

    Args:
        retrieve: the retriever (in-process BM25 or an HTTP client).
        topk: passages per search.
        max_turns: turns before the episode ends without an answer.
    """

    def __init__(self, retrieve: Retrieve, *, topk: int = DEFAULT_TOPK, max_turns: int = MAX_TURNS) -> None:
        self._retrieve, self._topk, self._max_turns = retrieve, topk, max_turns
        self._task: Task | None = None
        self._actions: list[str] = []
        self._terminal: tuple[str, float, bool, dict[str, Any]] | None = None

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        """Start the question; the observation is the question itself."""
        self._task, self._actions, self._terminal = task, [], None
        return task.instruction, self._info(task.instruction, won=False, score=0.0)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Search, answer, or waste the turn; after done, the cached terminal result."""
        if self._terminal is not None:
            return self._terminal
        if self._task is None:
            raise RuntimeError("step() before reset()")
        action = action if isinstance(action, str) else str(action)
        self._actions.append(action)
        done = len(self._actions) >= self._max_turns or ("<answer>" in action and "</answer>" in action)
        if done:
            answer = last_answer("".join(self._actions))
            score = exact_match(answer, self._task.gold_answers) if answer is not None else 0.0
            self._terminal = ("", score, True, self._info("", won=score >= 1.0, score=score))
            return self._terminal
        query = _SEARCH.search(action)
        obs = self._search(query.group(1).strip()) if query else ""
        return obs, 0.0, False, self._info(obs, won=False, score=0.0)

    def close(self) -> None:
        """Nothing to release (HTTP clients open one connection per request)."""

    def _search(self, query: str) -> str:
        try:
            return format_information(self._retrieve(query, self._topk))
        except (BackendUnavailable, ValueError, OSError) as e:
            # A failed retrieval is an observation, not a crash (§5.4); a dead server is caught earlier,
            # when the real backend is built (``make_env`` probes it).
            return format_information(None, error=str(e))

    def _info(self, obs: str, *, won: bool, score: float) -> dict[str, Any]:
        assert self._task is not None
        return {
            "won": won,
            "task_score": float(score),
            "admissible": None,
            "anchor_obs": obs,
            "data_source": self._task.payload.get("data_source", ""),
            "turns": len(self._actions),
        }
