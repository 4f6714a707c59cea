"""The official WebShop purchase score (``engine/goal.py::get_reward``, envs.md §4.4, errata 13-16).

Ported quirks and all, so scores stay comparable with published runs:

* ``normalize_color`` returns the first colour of the list that is a case-sensitive substring (errata 14);
* synthetic goals pass ``(name, value)`` tuples to the option scorer, so the option name joins the token
  set and colour normalisation only fires on an exact tuple element (errata 13);
* ``title_score`` counts repeated nouns in its denominator; the default noun extractor reproduces the
  blank spaCy pipeline (no nouns → 0.2), the only pipeline installable offline (errata 15);
* goal attributes are not lower-cased for the substring test; ``price_upper <= 0`` raises; option keys
  are absent from the info when the goal has no options (errata 16).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

# web_agent_site/engine/normalize.py COLOR_SET, in its (alphabetical) order: the order decides which colour
# wins ("navy blue" -> "blue", "washed denim" -> "ash").
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream",
    "crystal", "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape",
    "graphite", "grass", "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender",
    "lemon", "leopard", "light", "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint",
    "mocha", "multicolor", "mushroom", "mustard", "natural", "navy", "nude", "olive", "orange", "peach",
    "pewter", "pink", "plum", "purple", "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire",
    "seashell", "silver", "skull", "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal",
    "tiger", "turquoise", "violet", "walnut", "wheat", "white", "wine", "yellow",
)
MATCH_THRESHOLD = 85
"""A fuzzy match needs ``token_set_ratio > 85`` (strictly greater)."""

NounExtractor = Callable[[str], list[str]]
"""Maps a product name to its lower-cased noun tokens, repeats kept (the spaCy NOUN/PROPN filter)."""


def normalize_color(value: Any) -> Any:
    """First colour in ``COLOR_SET`` contained in ``value`` (``in``: substring for str, element for tuple)."""
    for color in COLOR_SET:
        if color in value:
            return color
    return value


# thefuzz's "ascii dammit" table: ``force_ascii`` deletes U+0080-U+00FF only; every other character,
# non-ASCII letters included, goes on to rapidfuzz's ``default_process``.
_LATIN1 = dict.fromkeys(range(0x80, 0x100))
_NON_ALNUM = re.compile(r"[\W_]")  # everything str.isalnum() rejects (\w is alphanumerics plus "_")


def _full_process(value: Any) -> str:
    """thefuzz ``utils.full_process(value, force_ascii=True)`` on rapidfuzz (the reference, envs.md §4.6).

    ``str()``; delete U+0080-U+00FF; every non-alphanumeric character (ASCII punctuation, "’", "–", the
    non-breaking hyphen, ...) becomes a space; lower-case; trim. So "red–blue" is "red blue" and "中文"
    stays "中文". ``str(("color", "navy blue"))`` yields ``color    navy blue``. rapidfuzz lower-cases one
    character at a time, so "Σ" is always "σ" (Python's ``lower`` writes a word-final "ς") and "İ" is "i"
    (Python: "i" + U+0307). Its alphanumeric table is Unicode 13: letters added in Unicode 14 or later count
    as letters here and as separators there (none occur in product text).
    """
    text = _NON_ALNUM.sub(" ", str(value).translate(_LATIN1)).replace("Σ", "σ").lower()
    # U+0307 is not alphanumeric, so one left after the substitution came from lower-casing "İ".
    return text.replace("\u0307", "").strip()


def _indel_ratio(a: str, b: str) -> float:
    """rapidfuzz ``fuzz.ratio``: 100 · 2·LCS / (|a| + |b|) (normalised Indel similarity)."""
    if not a and not b:
        return 100.0
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return 200.0 * prev[-1] / (len(a) + len(b))


def token_set_ratio(s1: Any, s2: Any) -> int:
    """thefuzz ``fuzz.token_set_ratio`` (rapidfuzz backend, rounded to an int as thefuzz does)."""
    t1, t2 = set(_full_process(s1).split()), set(_full_process(s2).split())
    if not t1 or not t2:
        return 0
    sect, d12, d21 = t1 & t2, t1 - t2, t2 - t1
    if sect and (not d12 or not d21):
        return 100
    s_sect = " ".join(sorted(sect))
    c12 = (s_sect + " " + " ".join(sorted(d12))).strip()
    c21 = (s_sect + " " + " ".join(sorted(d21))).strip()
    scores = [_indel_ratio(c12, c21)]
    if s_sect:
        scores += [_indel_ratio(s_sect, c12), _indel_ratio(s_sect, c21)]
    return round(max(scores))


def blank_pipeline_nouns(name: str) -> list[str]:
    """The default: a blank spaCy pipeline tags nothing, so there are no nouns (errata 15)."""
    return []


def catalog_noun_extractor(known_nouns: Iterable[str]) -> NounExtractor:
    """An alternative extractor: tokens of ``name`` that are known product-type nouns (envs.md §4.6)."""
    vocab = frozenset(known_nouns)

    def extract(name: str) -> list[str]:
        return [t for t in re.findall(r"[a-z0-9-]+", name.lower()) if t in vocab]

    return extract


def get_type_reward(product: dict[str, Any], goal: dict[str, Any], nouns: NounExtractor) -> dict[str, Any]:
    """``r_type`` from query, category and title-noun overlap."""
    query_match = product["query"] == goal["query"]
    p_cat = {x.strip() for x in product["product_category"].split("›")}
    g_cat = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(p_cat & g_cat) >= 2
    p_nouns, g_nouns = nouns(product["name"]), nouns(goal["name"])
    # Set intersection over a list denominator: repeated goal nouns count twice (errata 15).
    title_score = 0.2 if not g_nouns else len(set(p_nouns) & set(g_nouns)) / len(g_nouns)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match,
            "title_score": title_score}


def get_attribute_reward(product: dict[str, Any], goal: dict[str, Any]) -> tuple[float, int]:
    """Fuzzy match against the product's attributes, else a raw substring of title/bullets/description."""
    matches = 0
    for g_attr in goal["attributes"]:
        fuzzy = any(token_set_ratio(p_attr, g_attr) > MATCH_THRESHOLD for p_attr in product["Attributes"])
        # Fallback: raw substring of the lower-cased text; the goal side is not lower-cased (errata 16).
        text = (product["Title"].lower(), " ".join(product["BulletPoints"]).lower(),
                product["Description"].lower())
        matches += fuzzy or any(g_attr in t for t in text)
    return matches / len(goal["attributes"]), matches


def get_option_reward(purchased: list[Any], goal_options: list[Any]) -> tuple[float | None, int]:
    """Colour-normalise both sides, then count goal options with a purchased option scoring > 85."""
    purchased = [normalize_color(o) for o in purchased]
    goal_norm = [normalize_color(o) for o in goal_options]
    matches = 0
    for g_option in goal_norm:
        if any(token_set_ratio(p, g_option) > MATCH_THRESHOLD for p in purchased):
            matches += 1
    return (matches / len(goal_norm) if goal_norm else None), matches


def get_reward(product: dict[str, Any], goal: dict[str, Any], price: float, options: dict[str, str],
               nouns: NounExtractor = blank_pipeline_nouns) -> tuple[float, dict[str, Any]]:
    """The purchase score in [0, 1] and its components (the release's ``verbose=True`` info).

    Raises:
        TypeError: ``price_upper <= 0`` (the release adds ``None`` to an int; errata 16).
    """
    type_info = get_type_reward(product, goal, nouns)
    r_price = (price <= goal["price_upper"]) if goal["price_upper"] > 0 else None
    r_att, n_att = get_attribute_reward(product, goal)
    goal_opts = goal["goal_options"]
    n_opt, r_option = 0, None
    if len(goal_opts) > 0:
        # Synthetic goals store a dict: its (name, value) items reach the scorer as tuples (errata 13).
        items = list(goal_opts.items()) if isinstance(goal_opts, dict) else list(goal_opts)
        r_option, n_opt = get_option_reward(list(options.values()), items)
    den = len(goal["attributes"]) + len(goal_opts) + 1
    score = (n_att + n_opt + r_price) / den * type_info["r_type"]  # type: ignore[operator]
    info: dict[str, Any] = {
        "r_type": float(type_info["r_type"]),
        "r_att": r_att,
        "w_att": len(goal["attributes"]) / den,
        "query_match": type_info["query_match"],
        "category_match": type_info["category_match"],
        "title_score": type_info["title_score"],
    }
    if r_option is not None:
        info["r_option"] = r_option
        info["w_option"] = len(goal_opts) / den
    if r_price is not None:
        info["r_price"] = float(r_price)
        info["w_price"] = 1 / den
    return score, info
