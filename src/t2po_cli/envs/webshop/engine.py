"""The embedded WebShop text environment: pages, clickables and transitions (envs.md §4.2-§4.4, §4.6).

Reproduces ``WebAgentTextEnv`` in ``observation_mode='text'``: the raw observation is the page's visible
strings joined by `` [SEP] ``, actions are ``search[...]`` / ``click[...]`` parsed with the release's
``(.+)\\[(.+)\\]`` regex, anything else is a no-op, and ``click[buy now]`` ends the episode with the official
purchase score. The official auto-reset after done is replaced by a cached terminal result (§0.1).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from t2po_cli.envs.base import Task
from t2po_cli.envs.text_search import BM25Index
from t2po_cli.envs.webshop.catalog import Catalog, build_catalog
from t2po_cli.envs.webshop.reward import NounExtractor, blank_pipeline_nouns, get_reward

SEP = " [SEP] "
RESULTS_TOP_N = 50
PER_PAGE = 10
WIN_REWARD = 10.0
"""T2PO's env reward: 10 when the purchase score is exactly 1.0, else 0 (envs.md §1, §4.4)."""
_ACTION = re.compile(r"(.+)\[(.+)\]")  # the release's parse_action: greedy name, non-empty argument
_SUB_PAGES = ("description", "features", "reviews")


@functools.lru_cache(maxsize=4)
def search_index(size: int, seed: int) -> BM25Index:
    """The BM25 index over one catalogue (built once per process)."""
    catalog = build_catalog(size, seed)
    return BM25Index([catalog.search_text(p) for p in catalog.products])


def format_observation(raw: str, instruction: str) -> str:
    """The prompt's formatted page (§4.2): drop everything through the instruction, quote each part.

    Pages without the instruction (the done page) are returned unchanged, as in the release.
    """
    parts = raw.split(SEP)
    if instruction not in parts:
        return raw
    rest = parts[parts.index(instruction) + 1:]
    return SEP.join(f"'{p}'" for p in rest)


def render_actions(available: dict[str, Any]) -> list[str]:
    """The admissible action strings: ``search[<your query>]`` when there is a search bar, then clicks."""
    actions = ["search[<your query>]"] if available["has_search_bar"] else []
    return actions + [f"click[{c}]" for c in available["clickables"]]


@dataclass
class _State:
    page: str = "search"  # search | results | item | description | features | reviews | done
    query: str = ""
    results: list[str] = field(default_factory=list)
    page_num: int = 1
    asin: str = ""
    options: dict[str, str] = field(default_factory=dict)


class WebShopEnv:
    """One embedded WebShop episode (implements ``TextEnv``).

    Args:
        nouns: noun extractor for ``title_score`` (default: the blank-pipeline behaviour, errata 15).
    """

    def __init__(self, nouns: NounExtractor = blank_pipeline_nouns) -> None:
        self._nouns = nouns
        self._catalog: Catalog | None = None
        self._index: BM25Index | None = None
        self._goal: dict[str, Any] = {}
        self._goal_idx = -1
        self._state = _State()
        self._terminal: tuple[str, float, bool, dict[str, Any]] | None = None

    # -- TextEnv -----------------------------------------------------------------------------------------
    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        """Open the search page for the task's goal index."""
        size, seed = int(task.payload["catalog_size"]), int(task.payload["catalog_seed"])
        self._catalog = build_catalog(size, seed)
        self._index = search_index(size, seed)
        self._goal_idx = int(task.payload["goal_idx"])
        self._goal = self._catalog.goals[self._goal_idx]
        self._state = _State()
        self._terminal = None
        obs = self._render()
        return obs, self._info(obs, won=False, score=0.0)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Apply ``search[...]`` or ``click[...]``; anything else is a no-op on the same page."""
        if self._terminal is not None:
            return self._terminal
        if self._catalog is None:
            raise RuntimeError("step() before reset()")
        match = _ACTION.match(action) if isinstance(action, str) else None
        name, arg = (match.group(1), match.group(2).lower()) if match else ("", "")
        clickables = self._clickables()
        if name == "search" and arg:
            self._search(arg)
        elif name == "click" and arg in clickables and arg != "search":
            if arg == "buy now":
                return self._buy()
            self._click(arg)
        obs = self._render()
        return obs, 0.0, False, self._info(obs, won=False, score=0.0)

    def close(self) -> None:
        """Nothing to release (the catalogue and index are shared, cached per process)."""

    # -- transitions -------------------------------------------------------------------------------------
    def _search(self, arg: str) -> None:
        # Keywords are lower-cased and split on spaces (§4.3); accepted from any page.
        keywords = arg.split(" ")
        assert self._index is not None and self._catalog is not None
        hits = self._index.search(" ".join(keywords), RESULTS_TOP_N)
        self._state = _State(page="results", query=" ".join(keywords),
                             results=[self._catalog.products[i]["asin"] for i, _ in hits])

    def _click(self, arg: str) -> None:
        st = self._state
        if arg == "back to search":
            self._state = _State()
        elif arg == "next >":
            st.page_num += 1
        elif arg == "< prev":
            if st.page in _SUB_PAGES:
                st.page = "item"
            elif st.page == "item":
                st.page, st.asin, st.options = "results", "", {}
            else:
                st.page_num -= 1
        elif st.page == "results":
            st.page, st.asin, st.options = "item", arg.upper(), {}
        elif arg in _SUB_PAGES:
            st.page = arg
        else:
            # An option value on the item page: select it under its option name.
            assert self._catalog is not None
            for opt_name, values in self._catalog.by_asin[st.asin]["options"].items():
                if arg in values:
                    st.options[opt_name] = arg
                    break

    def _buy(self) -> tuple[str, float, bool, dict[str, Any]]:
        assert self._catalog is not None
        asin = self._state.asin
        product = self._catalog.by_asin[asin]
        score, components = get_reward(product, self._goal, self._catalog.prices[asin],
                                       dict(self._state.options), nouns=self._nouns)
        self._state.page = "done"
        obs = SEP.join([
            "Thank you for shopping with us!", "Your code:", "None", "(Paste it in your MTurk interface.)",
            "Purchased", "asin", asin, "options", json.dumps(self._state.options, sort_keys=True),
            "Your score (min 0.0, max 1.0)", f"{score:.4f}",
        ])
        won = score == 1.0
        info = self._info(obs, won=won, score=score)
        info.update(components)
        self._terminal = (obs, WIN_REWARD if won else 0.0, True, info)
        return self._terminal

    # -- rendering ---------------------------------------------------------------------------------------
    def _page_asins(self) -> list[str]:
        start = (self._state.page_num - 1) * PER_PAGE
        return self._state.results[start:start + PER_PAGE] if start >= 0 else []

    def _clickables(self) -> list[str]:
        st = self._state
        if st.page == "search":
            return ["search"]
        if st.page == "results":
            prev = ["< prev"] if st.page_num > 1 else []
            return ["back to search", *prev, "next >", *(a.lower() for a in self._page_asins())]
        if st.page == "item":
            assert self._catalog is not None
            values = [v for vs in self._catalog.by_asin[st.asin]["options"].values() for v in vs]
            return ["back to search", "< prev", "description", "features", "reviews", "buy now", *values]
        if st.page in _SUB_PAGES:
            return ["back to search", "< prev"]
        return []

    def _render(self) -> str:
        assert self._catalog is not None
        st = self._state
        head = ["WebShop", "Instruction:", self._goal["instruction_text"]]
        if st.page == "search":
            return SEP.join([*head, "Search"])
        if st.page == "results":
            parts = [*head, "Back to Search", f"Page {st.page_num} (Total results: {len(st.results)})"]
            parts += ["< Prev"] if st.page_num > 1 else []
            parts.append("Next >")
            for asin in self._page_asins():
                product = self._catalog.by_asin[asin]
                parts += [asin, product["Title"], product["Price"]]
            return SEP.join(parts)
        product = self._catalog.by_asin[st.asin]
        parts = [*head, "Back to Search", "< Prev"]
        if st.page == "item":
            for opt_name, values in product["options"].items():
                parts += [opt_name, *values]
            parts += [product["Title"], f"Price: {product['Price']}", "Rating: N.A.", "Description",
                      "Features", "Reviews", "Buy Now"]
        elif st.page == "description":
            parts.append(product["Description"])
        elif st.page == "features":
            parts += product["BulletPoints"]
        return SEP.join(parts)

    def _info(self, obs: str, *, won: bool, score: float) -> dict[str, Any]:
        available = {"has_search_bar": self._state.page == "search", "clickables": self._clickables()}
        return {
            "won": won,
            "task_score": float(score),
            "admissible": render_actions(available),
            "available_actions": available,
            "anchor_obs": format_observation(obs, self._goal["instruction_text"]),
            "page": self._state.page,
            "asin": self._state.asin,
            "selected_options": dict(self._state.options),
            "goal_idx": self._goal_idx,
        }
