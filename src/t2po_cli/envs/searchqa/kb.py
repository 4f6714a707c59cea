"""Procedural knowledge base and questions for the embedded Search-QA env (envs.md §5.6).

Synthetic entities (countries, cities, people, companies) with typed attributes are rendered as passages
``"Title"\\ntext`` in the wiki-18 corpus shape (``{"id", "contents"}``), plus distractor passages that
repeat the entity names without the answer. Questions are single-hop (one attribute of one entity) or
two-hop bridges (an attribute of the entity named by another entity's attribute); each hop carries the
canonical query an expert would issue, and gold answers include aliases.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

KB_SEED = 0
"""The corpus is shared by every task, like wiki-18; tasks only pick a question."""
VAL_QUESTIONS = 200
"""The first questions of the shuffled pool form the ``val`` split; the rest are ``train``."""
_SYL = ("ar", "bel", "cor", "dan", "el", "fal", "gor", "hal", "ist", "jar", "kel", "lor", "mar", "nor",
        "os", "pel", "quin", "ros", "sal", "tor", "ul", "var", "wen", "yor", "zan")
_FIRST = ("Anya", "Boris", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira",
          "Lars", "Mira", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tove", "Viktor")
_CONTINENTS = ("Europe", "Asia", "Africa", "South America", "Oceania")
_PROFESSIONS = ("engineer", "chemist", "architect", "banker", "composer", "physician")


@dataclass(frozen=True)
class KnowledgeBase:
    """Passages and questions.

    Attributes:
        docs: ``{"id", "contents"}`` passages (gold and distractor), the retriever corpus.
        questions: dicts with ``question``, ``golden_answers``, ``data_source`` and ``hops`` (each hop:
            ``query``, ``answer``, ``doc_id``).
    """

    docs: tuple[dict[str, str], ...]
    questions: tuple[dict[str, Any], ...]


def kb_scale(difficulty: int) -> int:
    """Entity-count multiplier: difficulty 1 gives 630 passages and 750 questions."""
    return max(1, int(difficulty))


@functools.lru_cache(maxsize=4)
def build_kb(scale: int = 1, seed: int = KB_SEED) -> KnowledgeBase:
    """Generate the corpus and the shuffled question pool; deterministic in (scale, seed)."""
    rng = random.Random(seed)
    names = _NameSource(rng)
    countries = [{"name": names.place(), "continent": rng.choice(_CONTINENTS),
                  "founded": str(rng.randint(1100, 1950))} for _ in range(40 * scale)]
    cities = [{"name": names.place(), "country": rng.choice(countries)} for _ in range(120 * scale)]
    for country in countries:
        country["capital"] = rng.choice([c for c in cities if c["country"] is country] or cities)
    people = [{"name": names.person(), "born_in": rng.choice(cities), "profession": rng.choice(_PROFESSIONS),
               "year": str(rng.randint(1800, 1990))} for _ in range(150 * scale)]
    companies = [{"name": names.place() + " " + rng.choice(("Works", "Systems", "Foods", "Motors")),
                  "founder": rng.choice(people), "hq": rng.choice(cities),
                  "founded": str(rng.randint(1850, 2015))} for _ in range(80 * scale)]
    docs: list[dict[str, str]] = []

    def add(title: str, text: str) -> str:
        doc_id = str(len(docs))
        docs.append({"id": doc_id, "contents": f'"{title}"\n{text}'})
        return doc_id

    for c in countries:
        c["doc"] = add(c["name"], f"{c['name']} is a country in {c['continent']}. The capital of {c['name']} "
                                  f"is {c['capital']['name']}. {c['name']} was founded in {c['founded']}.")
        add(f"Culture of {c['name']}", f"The culture of {c['name']} is known for music, food and festivals.")
    for city in cities:
        city["doc"] = add(city["name"], f"{city['name']} is a city located in the country of "
                                        f"{city['country']['name']}. It lies on a river.")
        add(f"{city['name']} railway station", f"{city['name']} railway station serves trains of the region.")
    for p in people:
        p["doc"] = add(p["name"], f"{p['name']} (born {p['year']}) is a {p['profession']}. {p['name']} was "
                                  f"born in the city of {p['born_in']['name']}.")
    for co in companies:
        co["doc"] = add(co["name"], f"{co['name']} is a company founded in {co['founded']} by "
                                    f"{co['founder']['name']}. Its headquarters are in {co['hq']['name']}.")
        add(f"{co['name']} products", f"{co['name']} sells its products to customers around the world.")
    questions = _questions(countries, cities, people, companies)
    random.Random(seed + 1).shuffle(questions)
    return KnowledgeBase(tuple(docs), tuple(questions))


class _NameSource:
    """Unique synthetic names (no clashes between entities, so answers are unambiguous)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.taken = rng, set()

    def place(self) -> str:
        while True:
            name = "".join(self.rng.choice(_SYL) for _ in range(self.rng.randint(2, 3))).capitalize()
            if name not in self.taken:
                self.taken.add(name)
                return name

    def person(self) -> str:
        return f"{self.rng.choice(_FIRST)} {self.place()}"


def _aliases(kind: str, name: str) -> list[str]:
    """Gold answer lists include aliases (§5.6)."""
    if kind == "country":
        return [name, f"Republic of {name}"]
    if kind == "city":
        return [name, f"{name} City"]
    if kind == "person":
        return [name, name.split(" ", 1)[1]]
    return [name]


def _hop(query: str, answer: str, doc: str) -> dict[str, str]:
    return {"query": query, "answer": answer, "doc_id": doc}


def _q(question: str, kind: str, answer: str, source: str, hops: list[dict[str, str]]) -> dict[str, Any]:
    return {"question": question, "golden_answers": _aliases(kind, answer), "data_source": source,
            "hops": hops}


def _questions(countries: list[dict[str, Any]], cities: list[dict[str, Any]], people: list[dict[str, Any]],
               companies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    single, bridge = "synthetic_single", "synthetic_bridge"
    out: list[dict[str, Any]] = []
    for c in countries:
        cap = c["capital"]["name"]
        out.append(_q(f"What is the capital of {c['name']}?", "city", cap, single,
                      [_hop(f"capital of {c['name']}", cap, c["doc"])]))
    for city in cities:
        land = city["country"]
        out.append(_q(f"In which country is {city['name']} located?", "country", land["name"], single,
                      [_hop(f"{city['name']} city located country", land["name"], city["doc"])]))
        out.append(_q(f"What is the capital of the country where {city['name']} is located?", "city",
                      land["capital"]["name"], bridge,
                      [_hop(f"{city['name']} city located country", land["name"], city["doc"]),
                       _hop(f"capital of {land['name']}", land["capital"]["name"], land["doc"])]))
    for p in people:
        out.append(_q(f"In which city was {p['name']} born?", "city", p["born_in"]["name"], single,
                      [_hop(f"{p['name']} born city", p["born_in"]["name"], p["doc"])]))
    for co in companies:
        f, hq = co["founder"], co["hq"]
        out.append(_q(f"Who founded {co['name']}?", "person", f["name"], single,
                      [_hop(f"{co['name']} company founded by", f["name"], co["doc"])]))
        out.append(_q(f"In what year was {co['name']} founded?", "year", co["founded"], single,
                      [_hop(f"{co['name']} company founded", co["founded"], co["doc"])]))
        out.append(_q(f"In which city was the founder of {co['name']} born?", "city", f["born_in"]["name"],
                      bridge, [_hop(f"{co['name']} company founded by", f["name"], co["doc"]),
                               _hop(f"{f['name']} born city", f["born_in"]["name"], f["doc"])]))
        out.append(_q(f"In which country are the headquarters of {co['name']}?", "country",
                      hq["country"]["name"], bridge,
                      [_hop(f"{co['name']} headquarters", hq["name"], co["doc"]),
                       _hop(f"{hq['name']} city located country", hq["country"]["name"], hq["doc"])]))
    return out
