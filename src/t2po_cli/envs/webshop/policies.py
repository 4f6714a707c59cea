"""Scripted WebShop policies: an expert that solves every goal and a uniform random baseline.

Both answer in the trained format (``<think>…</think>\\n<action>…</action>``), so their transcripts double
as the supervised warm-start corpus (``registry.expert_dialogues``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from t2po_cli.envs.base import Policy, Task
from t2po_cli.envs.webshop.catalog import build_catalog

MAX_RESULT_PAGES = 5
"""The expert pages through at most the 50 results before searching for the exact title."""
_PAGE = re.compile(r"Page (\d+) \(Total results: (\d+)\)")


def _respond(thought: str, action: str) -> str:
    return f"<think>{thought}</think>\n<action>{action}</action>"


def _search(goal: dict[str, Any]) -> tuple[str, str]:
    """The first search of both scripted policies: the goal's attributes and product type (instruction words)."""
    return "I should search for the product described in the instruction.", \
        f"search[{' '.join([*goal['attributes'], goal['query']])}]"


def _as_policy(action: Callable[[Task, str, dict[str, Any]], tuple[str, str]]) -> Policy:
    """Wrap a deterministic ``(task, obs, info) -> (thought, action)`` rule as a Policy."""

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        return _respond(*action(task, obs, info))

    return act


def _goal(task: Task) -> dict[str, Any]:
    catalog = build_catalog(int(task.payload["catalog_size"]), int(task.payload["catalog_seed"]))
    return catalog.goals[int(task.payload["goal_idx"])]


def expert_action(task: Task, obs: str, info: dict[str, Any]) -> tuple[str, str]:
    """(thought, action) for the current page: search, page to the target, pick options, buy.

    The first search uses the goal's words (attributes + product type); if the target is not among the
    results it searches for the target's exact title, which BM25 ranks first (tested for every goal).
    """
    goal = _goal(task)
    target = goal["asin"].lower()
    page = info.get("page", "search")
    clickables = info.get("available_actions", {}).get("clickables", [])
    if page == "search":
        return _search(goal)
    if page == "results":
        if target in clickables:
            return f"Item {target} matches what I need.", f"click[{target}]"
        m = _PAGE.search(obs)
        page_num, total = (int(m.group(1)), int(m.group(2))) if m else (1, 0)
        if page_num * 10 < total and page_num < MAX_RESULT_PAGES:
            return "The right item is not on this page; I will look at the next one.", "click[next >]"
        title = build_catalog(int(task.payload["catalog_size"]),
                              int(task.payload["catalog_seed"])).by_asin[goal["asin"]]["Title"]
        return "None of these results fit; I will search more precisely.", f"search[{title.lower()}]"
    if page == "item":
        if info.get("asin", "").lower() != target:
            return "This is not the item I want; go back.", "click[< prev]"
        selected = info.get("selected_options", {})
        for name, value in goal["goal_options"].items():
            if selected.get(name) != value:
                return f"I need {name} {value}.", f"click[{value}]"
        return "All options match and the price is within budget; buy it.", "click[buy now]"
    return "Go back to the item page.", "click[< prev]"


def expert_policy(seed: int) -> Policy:
    """The scripted expert (deterministic; ``seed`` is accepted for the family contract)."""
    return _as_policy(expert_action)


_ASIN = re.compile(r"^b0[a-z0-9]{8}$")


def demo_action(task: Task, obs: str, info: dict[str, Any]) -> tuple[str, str]:
    """(thought, action) from what the page and the instruction show, never from the hidden target.

    Search with the instruction's product words, open the first result, select the instruction's options
    that the item offers, buy. The hidden target ASIN is not used, so a model can learn every step from its
    prompt; it wins whenever the first result satisfies the goal (0.385 of the first 200 val goals).
    """
    goal = _goal(task)
    page = info.get("page", "search")
    clickables = info.get("available_actions", {}).get("clickables", [])
    if page == "search":
        return _search(goal)
    if page == "results":
        items = [c for c in clickables if _ASIN.match(c)]
        if items:
            return "The first result looks closest to what I need.", f"click[{items[0]}]"
        return "Nothing useful here; search again.", "click[back to search]"
    if page == "item":
        selected = info.get("selected_options", {})
        for name, value in goal["goal_options"].items():
            if value in clickables and selected.get(name) != value:
                return f"I need {name} {value}.", f"click[{value}]"
        return "The options I need are selected; buy it.", "click[buy now]"
    return "Go back to the item page.", "click[< prev]"


def demo_policy(seed: int) -> Policy:
    """The observable-information demonstrator used for the warm-start corpus (deterministic)."""
    return _as_policy(demo_action)


def random_policy(seed: int) -> Policy:
    """Uniform over the admissible actions; a search uses 2-4 random words of the instruction."""
    rng = random.Random(seed)

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        available = info.get("available_actions") or {"has_search_bar": True, "clickables": []}
        choices = [f"click[{c}]" for c in available["clickables"]]
        if available["has_search_bar"]:
            words = task.instruction.split()
            choices.append(f"search[{' '.join(rng.sample(words, min(len(words), rng.randint(2, 4))))}]")
        action = rng.choice(choices) if choices else "click[back to search]"
        return _respond("I will try something.", action)

    return act
