"""Procedural ALFWorld worlds (envs.md §3.1, §3.11): one room, receptacles, objects and a goal.

A world is a pure function of ``(seed, task_type, difficulty)``. Entity names follow ALFWorld (a lower-case
type plus an index, §3.2). Every entity also carries the ALFRED-style PDDL id the game-file writer uses; the
ids are chosen so that the real engine's demangler gives back exactly our names (it numbers the sorted ids of
one type in *descending* order) and so that sorting by id reproduces the real engine's list order
(receptacles and contents are listed sorted by id: ``cabinet 3, cabinet 2, cabinet 1, countertop 1``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

TASK_TYPES: dict[int, str] = {
    1: "pick_and_place_simple",
    2: "look_at_obj_in_light",
    3: "pick_clean_then_place_in_recep",
    4: "pick_heat_then_place_in_recep",
    5: "pick_cool_then_place_in_recep",
    6: "pick_two_obj_and_place",
}
"""Numbered as ``alfworld`` ``TASK_TYPES`` (§3.1)."""

GOAL_TEMPLATES: dict[str, tuple[str, str]] = {
    "pick_and_place_simple": ("put a {obj} in {recep}", "put some {obj} on {recep}"),
    "look_at_obj_in_light": ("look at {obj} under the {toggle}", "examine the {obj} with the {toggle}"),
    "pick_clean_then_place_in_recep": ("put a clean {obj} in {recep}", "clean some {obj} and put it in {recep}"),
    "pick_heat_then_place_in_recep": ("put a hot {obj} in {recep}", "heat some {obj} and put it in {recep}"),
    "pick_cool_then_place_in_recep": ("put a cool {obj} in {recep}", "cool some {obj} and put it in {recep}"),
    "pick_two_obj_and_place": ("put two {obj} in {recep}", "find two {obj} and put them in {recep}"),
}
"""The two goal templates per task type (alfworld ``gen/goal_library.py``, §3.1)."""

APPLIANCE: dict[str, str] = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
"""The receptacle type each state-change task needs (§3.4: clean at a sink basin, heat at a microwave, cool
at a fridge)."""

OBJECT_PROPERTY = {
    "pick_clean_then_place_in_recep": "cleanable",
    "pick_heat_then_place_in_recep": "heatable",
    "pick_cool_then_place_in_recep": "coolable",
}
SHARP_TYPES = frozenset({"Knife", "ButterKnife"})
"""Object types that can slice (the ``SliceObject`` precondition of ``alfred.pddl``)."""

MIN_RECEPTACLES, MAX_RECEPTACLES = 5, 25
MIN_DISTRACTORS, MAX_DISTRACTORS = 3, 15


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """Receptacle and object types with ``canContain`` and action properties (package data, from ALFRED)."""
    text = resources.files("t2po_cli").joinpath("data/alfworld/catalogue.json").read_text(encoding="utf-8")
    return json.loads(text)


def display_name(type_name: str, index: int) -> str:
    """``CounterTop`` 1 -> ``countertop 1`` (§3.2)."""
    return f"{type_name.lower()} {index}"


def pddl_id(type_name: str, index: int) -> str:
    """ALFRED-style id whose demangled name is ``display_name(type_name, index)``.

    The alfworld ``Demangler`` sorts the ids of one type and hands out numbers from the top, so the suffix
    ``99 - index`` makes index 1 sort last and get number 1. Sink basins are written as ALFRED does
    (``Sink|…|SinkBasin``) because the demangler appends ``basin`` to any id that contains it.
    """
    suffix = f"{100 - index:02d}"
    if type_name == "SinkBasin":
        return f"Sink_bar_{suffix}_bar_SinkBasin"
    return f"{type_name}_bar_{suffix}"


@dataclass(frozen=True)
class Entity:
    """A receptacle or an object: its ALFRED type, its display name and its PDDL id."""

    type: str
    index: int

    @property
    def name(self) -> str:
        return display_name(self.type, self.index)

    @property
    def pddl_id(self) -> str:
        return pddl_id(self.type, self.index)

    @property
    def sort_key(self) -> str:
        """The real engine lists entities in the order of their (lower-cased) PDDL ids."""
        return self.pddl_id.lower()


@dataclass(frozen=True)
class World:
    """One generated ALFWorld task: the room, the initial placement and the goal.

    Attributes:
        task_type: one of ``TASK_TYPES`` values.
        goal: the goal sentence, without the final period.
        obj_type: the goal object type O.
        recep_type: the goal receptacle type R (None for ``look_at_obj_in_light``).
        toggle_type: the lamp type (``look_at_obj_in_light`` only).
        receptacles: every receptacle, sorted as the real engine lists them.
        objects: every object (goal objects, lamp, distractors), sorted by PDDL id.
        placement: object name -> receptacle name at the start.
    """

    task_type: str
    goal: str
    obj_type: str
    recep_type: str | None
    toggle_type: str | None
    receptacles: tuple[Entity, ...]
    objects: tuple[Entity, ...]
    placement: dict[str, str] = field(compare=False)

    @property
    def task_type_id(self) -> int:
        return next(k for k, v in TASK_TYPES.items() if v == self.task_type)

    def receptacle(self, name: str) -> Entity:
        return next(r for r in self.receptacles if r.name == name)

    def object(self, name: str) -> Entity:
        return next(o for o in self.objects if o.name == name)


def openable(type_name: str) -> bool:
    return bool(catalogue()["receptacles"][type_name]["openable"])


def can_contain(recep_type: str, obj_type: str) -> bool:
    return obj_type in catalogue()["receptacles"][recep_type]["can_contain"]


def object_has(obj_type: str, prop: str) -> bool:
    """``heatable``/``coolable``/``cleanable``/``sliceable``; lamps have none of them."""
    return bool(catalogue()["objects"].get(obj_type, {}).get(prop, False))


def is_lamp(obj_type: str) -> bool:
    return obj_type in catalogue()["lamps"]


def generate_world(seed: int, task_type: str, difficulty: int = 1) -> World:
    """Generate one solvable world (§3.11). Deterministic given the arguments.

    Difficulty widens the room: at most ``10 + 5·difficulty`` receptacles (capped at 25) and
    ``5 + 5·difficulty`` distractors (capped at 15).
    """
    if task_type not in GOAL_TEMPLATES:
        raise ValueError(f"unknown ALFWorld task type {task_type!r}")
    rng = random.Random(f"alfworld|{task_type}|{seed}|{difficulty}")
    obj_type, recep_type, toggle_type, source_type = _choose_goal_types(rng, task_type)
    n_receps = rng.randint(MIN_RECEPTACLES, min(MAX_RECEPTACLES, 10 + 5 * max(1, difficulty)))
    required = [t for t in (recep_type, APPLIANCE.get(task_type), source_type) if t]
    if toggle_type:
        required.append(rng.choice(catalogue()["lamps"][toggle_type]))
    receptacles = _build_receptacles(rng, required, n_receps)
    placement: dict[str, str] = {}
    objects: list[Entity] = []
    goal_sources = [r for r in receptacles if can_contain(r.type, obj_type) and r.type != recep_type]
    for index in range(1, 3 if task_type == "pick_two_obj_and_place" else 2):
        goal_obj = Entity(obj_type, index)
        objects.append(goal_obj)
        placement[goal_obj.name] = rng.choice(goal_sources).name
    if toggle_type:
        lamp = Entity(toggle_type, 1)
        objects.append(lamp)
        surfaces = [r for r in receptacles if r.type in catalogue()["lamps"][toggle_type]]
        placement[lamp.name] = rng.choice(surfaces).name
    n_distractors = rng.randint(MIN_DISTRACTORS, min(MAX_DISTRACTORS, 5 + 5 * max(1, difficulty)))
    objects += _place_distractors(rng, receptacles, obj_type, n_distractors, placement)
    template = rng.choice(GOAL_TEMPLATES[task_type])
    goal = template.format(obj=obj_type.lower(), recep=(recep_type or "").lower(),
                           toggle=(toggle_type or "").lower())
    return World(
        task_type=task_type, goal=goal, obj_type=obj_type, recep_type=recep_type, toggle_type=toggle_type,
        receptacles=tuple(sorted(receptacles, key=lambda e: e.sort_key)),
        objects=tuple(sorted(objects, key=lambda e: e.sort_key)), placement=placement,
    )


def _choose_goal_types(rng: random.Random, task_type: str) -> tuple[str, str | None, str | None, str]:
    """(O, R, lamp type, a source type S != R that can hold O) for the task type."""
    cat = catalogue()
    recep_types = sorted(cat["receptacles"])
    prop = OBJECT_PROPERTY.get(task_type)
    obj_candidates = sorted(o for o in cat["objects"] if prop is None or cat["objects"][o][prop])
    while True:
        obj_type = rng.choice(obj_candidates)
        holders = [r for r in recep_types if can_contain(r, obj_type)]
        if task_type == "look_at_obj_in_light":
            return obj_type, None, rng.choice(sorted(cat["lamps"])), rng.choice(holders)
        # The goal receptacle is never the task's own appliance (no "put a hot apple in microwave").
        targets = [r for r in holders if r != APPLIANCE.get(task_type)]
        if not targets:
            continue
        recep_type = rng.choice(targets)
        sources = [r for r in holders if r != recep_type]
        if sources:
            return obj_type, recep_type, None, rng.choice(sources)


def _build_receptacles(rng: random.Random, required: list[str], total: int) -> list[Entity]:
    """``total`` receptacles (at least the required types), numbered 1.. per type."""
    cat = catalogue()["receptacles"]
    counts: dict[str, int] = {}
    for type_name in required:
        counts[type_name] = max(counts.get(type_name, 0), 1)
    types = sorted(cat)
    while sum(counts.values()) < total:
        type_name = rng.choice(types)
        if counts.get(type_name, 0) < cat[type_name]["max_count"]:
            counts[type_name] = counts.get(type_name, 0) + 1
        elif all(counts.get(t, 0) >= cat[t]["max_count"] for t in types):
            break
    return [Entity(t, i) for t in sorted(counts) for i in range(1, counts[t] + 1)]


def _place_distractors(rng: random.Random, receptacles: list[Entity], goal_type: str, count: int,
                       placement: dict[str, str]) -> list[Entity]:
    """Distractors of types other than the goal type, each in a compatible receptacle (``canContain``)."""
    cat = catalogue()["objects"]
    types = sorted(t for t in cat if t != goal_type)
    per_type: dict[str, int] = {}
    placed: list[Entity] = []
    for _ in range(50 * count):  # bounded: a room of single-purpose receptacles may hold few types
        if len(placed) >= count:
            break
        type_name = rng.choice(types)
        holders = [r for r in receptacles if can_contain(r.type, type_name)]
        if not holders:
            continue
        per_type[type_name] = per_type.get(type_name, 0) + 1
        obj = Entity(type_name, per_type[type_name])
        placement[obj.name] = rng.choice(holders).name
        placed.append(obj)
    return placed
