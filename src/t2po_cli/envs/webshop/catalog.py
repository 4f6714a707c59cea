"""Procedural WebShop catalogue and synthetic goals in the official schema (envs.md §4.1, §4.6).

The generator writes products the way the official ``items_shuffle`` / ``items_ins`` files look after the
engine's ``load_products`` cleaning (lower-case option values, ``Title``/``BulletPoints``/``Description``
/``Attributes`` keys), then builds synthetic goals exactly as ``get_synthetic_goals`` does: one goal per
product × option combination, instruction + `` with k: v, and …`` + a price clause, shuffled with the
release's fixed seed 233 (errata 13: the reference runs use synthetic goals, not human ones).
"""

from __future__ import annotations

import functools
import itertools
import random
import string
from dataclasses import dataclass
from typing import Any

CATALOG_SEED = 0
"""The store is shared by every task (as in the official env); tasks only pick a goal index."""
TEST_GOALS = 500
"""Goal indices 0-499 are the test (``val``) split, 500 onwards the training split (envs.md §4.1)."""
GOAL_SHUFFLE_SEED = 233
"""``random.seed(233); random.shuffle(goals)`` in the official ``SimServer``."""
PRICE_RANGE = [10.0 * i for i in range(1, 100)]
"""Price tiers of the official ``get_synthetic_goals``."""

# (category key, top-level segment, {sub-segment: product-type nouns}, attribute vocabulary,
#  {option name: values}, (min price, max price)). Option values are lower-case and '/'-free because the
# official loader lower-cases them and clicks are matched after lower-casing (§4.3).
CATEGORIES: tuple[tuple[str, str, dict[str, list[str]], list[str], dict[str, list[str]], tuple[int, int]], ...] = (
    ("beauty", "Beauty & Personal Care",
     {"Hair Care": ["shampoo", "conditioner", "hair oil"], "Skin Care": ["face cream", "serum", "body lotion"]},
     ["sulfate free", "paraben free", "long lasting", "natural ingredients", "cruelty free", "travel size",
      "dry skin", "sensitive skin"],
     {"scent": ["lavender", "coconut", "unscented", "citrus"], "size": ["3.4 fl oz", "8 ounce", "16 ounce"]},
     (5, 45)),
    ("fashion", "Clothing, Shoes & Jewelry",
     {"Men": ["running shoe", "t-shirt", "hoodie"], "Women": ["dress", "sandal", "cardigan"]},
     ["machine wash", "slim fit", "long sleeve", "anti slip", "quick drying", "cotton spandex",
      "button closure", "rubber sole"],
     {"color": ["black", "navy blue", "dark denim", "light grey", "white", "forest green"],
      "size": ["small", "medium", "large", "x-large"]},
     (10, 80)),
    ("food", "Grocery & Gourmet Food",
     {"Snacks": ["protein bar", "trail mix", "granola"], "Beverages": ["green tea", "coffee beans", "sparkling water"]},
     ["gluten free", "sugar free", "non gmo", "low carb", "keto friendly", "high protein", "usda organic",
      "dairy free"],
     {"flavor": ["chocolate", "vanilla", "peanut butter", "sea salt"], "size": ["pack of 6", "pack of 12", "1 pound"]},
     (3, 35)),
    ("home", "Home & Kitchen",
     {"Furniture": ["office chair", "bookcase", "side table"], "Bedding": ["duvet cover", "pillow", "throw blanket"]},
     ["easy assemble", "space saving", "high density", "living room", "easy clean", "solid wood",
      "machine washable", "memory foam"],
     {"color": ["beige", "espresso", "white", "walnut brown", "slate grey"], "size": ["twin", "queen", "king"]},
     (20, 300)),
    ("electronics", "Electronics",
     {"Audio": ["wireless earbuds", "bluetooth speaker", "headphones"],
      "Accessories": ["usb cable", "phone case", "power bank"]},
     ["fast charging", "noise cancelling", "water resistant", "long battery life", "high definition",
      "easy install", "hands free", "heavy duty"],
     {"color": ["black", "white", "rose gold", "midnight blue"], "style": ["classic", "pro", "mini"]},
     (8, 150)),
)
_INSTRUCTIONS = (
    "i need {attrs} {noun}",
    "i am looking for {attrs} {noun}",
    "find me {attrs} {noun}",
    "i want to buy {attrs} {noun}",
    "help me find {attrs} {noun}",
)
_SYLLABLES = ("ka", "zo", "ri", "vel", "mon", "ta", "lu", "ne", "sar", "qui", "dor", "pe", "xan", "bo", "li", "tre")


@dataclass(frozen=True)
class Catalog:
    """One generated store.

    Attributes:
        products: product records in the engine's cleaned schema, in generation order.
        by_asin: ``asin -> product``.
        prices: ``product_prices[asin]`` (the seeded draw the reward compares against ``price_upper``).
        goals: synthetic goals after the release's shuffle; the goal index is the position here.
        nouns: every product-type token the generator used (for the optional catalogue noun extractor).
    """

    products: tuple[dict[str, Any], ...]
    by_asin: dict[str, dict[str, Any]]
    prices: dict[str, float]
    goals: tuple[dict[str, Any], ...]
    nouns: frozenset[str]

    def search_text(self, product: dict[str, Any]) -> str:
        """The text BM25 indexes for one product (title, bullet points, description)."""
        return " ".join([product["Title"], *product["BulletPoints"], product["Description"]])


def catalog_size(difficulty: int) -> int:
    """1000 products at difficulty 1 (the T2PO small catalogue, §4.1); larger stores are harder to search."""
    return 1000 * max(1, int(difficulty))


@functools.lru_cache(maxsize=4)
def build_catalog(size: int = 1000, seed: int = CATALOG_SEED) -> Catalog:
    """Generate ``size`` products and their synthetic goals; deterministic in (size, seed)."""
    rng = random.Random(seed)
    brands = _brands(rng, 80)
    products: list[dict[str, Any]] = []
    prices: dict[str, float] = {}
    asins: set[str] = set()
    for _ in range(size):
        asin = _asin(rng, asins)
        product, price = _product(rng, asin, brands)
        products.append(product)
        prices[asin] = price
    goals = _synthetic_goals(products, prices, random.Random(seed + 1))
    random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)
    nouns = frozenset(w for cat in CATEGORIES for ns in cat[2].values() for n in ns for w in n.split())
    return Catalog(tuple(products), {p["asin"]: p for p in products}, prices, tuple(goals), nouns)


def _brands(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize())
    return sorted(out)


def _asin(rng: random.Random, taken: set[str]) -> str:
    alphabet = string.ascii_uppercase + string.digits
    while True:
        asin = "B0" + "".join(rng.choice(alphabet) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _product(rng: random.Random, asin: str, brands: list[str]) -> tuple[dict[str, Any], float]:
    """One product record plus its sampled price."""
    key, top, subs, attr_vocab, option_vocab, (lo, hi) = rng.choice(CATEGORIES)
    sub = rng.choice(sorted(subs))
    noun = rng.choice(subs[sub])
    attrs = rng.sample(attr_vocab, 3)
    brand = rng.choice(brands)
    title = f"{brand} {attrs[0].title()} {noun.title()}, {attrs[1].title()}, {attrs[2].title()}"
    low = round(rng.uniform(lo, hi), 2)
    if rng.random() < 0.2:
        # A listed range: the reward uses a seeded uniform draw inside it (§4.1 "Prices").
        high = round(low * rng.uniform(1.1, 1.5), 2)
        pricing = f"${low:.2f} to ${high:.2f}"
        price = round(rng.uniform(low, high), 2)
    else:
        pricing, price = f"${low:.2f}", low
    options: dict[str, list[str]] = {}
    for name in rng.sample(sorted(option_vocab), rng.randint(1, len(option_vocab))):
        options[name] = sorted(rng.sample(option_vocab[name], rng.randint(2, 3)))
    instruction = rng.choice(_INSTRUCTIONS).format(attrs=" and ".join(attrs[:2]) if rng.random() < 0.5
                                                   else attrs[0], noun=noun)
    ins_attrs = [a for a in attrs[:2] if a in instruction]
    bullets = [f"{a.capitalize()}: designed for everyday use." for a in attrs]
    product = {
        "asin": asin,
        "name": title,
        "Title": title,
        "full_description": f"The {brand} {noun} is made for people who care about quality.",
        "Description": f"The {brand} {noun} is made for people who care about quality.",
        "small_description": bullets,
        "BulletPoints": bullets,
        "pricing": pricing,
        "Price": pricing,
        "customization_options": {n: [{"value": v, "image": None} for v in vs] for n, vs in options.items()},
        "options": options,
        "images": [],
        "category": key,
        "query": noun,
        "product_category": f"{top} › {sub} › {noun.title()}",
        "Attributes": list(attrs),
        "instruction_text": instruction,
        "instruction_attributes": ins_attrs,
    }
    return product, price


def _synthetic_goals(products: list[dict[str, Any]], prices: dict[str, float],
                     rng: random.Random) -> list[dict[str, Any]]:
    """``get_synthetic_goals``: one goal per option combination, then goal weights (§4.1)."""
    goals: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for product in products:
        price = prices[product["asin"]]
        tiers = [p for p in PRICE_RANGE if p > price][:4]
        if len(tiers) >= 2:
            # The larger of two tiers sampled from the first four multiples of 10 above the price.
            _, price_upper = sorted(rng.sample(tiers, 2))
            price_text = f", and price lower than {price_upper:.2f} dollars"
        else:
            price_upper, price_text = 1_000_000.0, ""
        names = list(product["options"])
        for combo in itertools.product(*(product["options"][n] for n in names)):
            goal_options = dict(zip(names, combo, strict=True))
            option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
            option_text = " with " + option_text if option_text else ""
            goals.append({
                "asin": product["asin"],
                "category": product["category"],
                "query": product["query"],
                "name": product["name"],
                "product_category": product["product_category"],
                "instruction_text": product["instruction_text"].strip(".") + option_text + price_text,
                "attributes": product["instruction_attributes"],
                "price_upper": price_upper,
                "goal_options": goal_options,
            })
            for att in product["instruction_attributes"]:
                counts[att] = counts.get(att, 0) + 1
    for goal in goals:
        goal["weight"] = sum(1.0 / counts[a] for a in goal["attributes"]) / len(goal["attributes"])
    return goals
