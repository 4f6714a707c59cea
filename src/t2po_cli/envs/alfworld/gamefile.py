"""Export a generated world as a real ALFWorld game (envs.md §3.11 "Export", §3.12).

Writes ``<task_dir>/trial_T0/{game.tw-pddl, traj_data.json}`` with the PDDL domain and grammar that the
installed ``alfworld`` wheel ships (nothing is downloaded). ``game.tw-pddl`` holds ``pddl_domain``,
``grammar`` (goal placeholder replaced), ``pddl_problem``, ``solvable`` and ``walkthrough``; ``traj_data.json``
holds ``task_type``, ``pddl_params`` (without it the pip ``AlfredTWEnv`` expert fails with
``KeyError: 'pddl_params'``) and the templated goal as the turk annotation.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from t2po_cli.envs.alfworld.world import (
    World,
    can_contain,
    is_lamp,
    object_has,
    openable,
)
from t2po_cli.errors import UserError

INSTALL_HINT = "pip install 'alfworld==0.4.2' 'textworld==1.7.0'  (builds native code: needs gcc, g++, cmake, make)"
# Constants the domain's preconditions name directly (SinkBasinType in CleanObject, KnifeType in SliceObject,
# ...); the problem must declare them even when no entity has that type.
_DOMAIN_TYPE_CONSTANTS = (("SinkBasinType", "rtype"), ("MicrowaveType", "rtype"), ("FridgeType", "rtype"),
                          ("KnifeType", "otype"), ("ButterKnifeType", "otype"))
_GOALS = {
    "pick_and_place_simple": "(exists (?r - receptacle) (exists (?o - object) (and (inReceptacle ?o ?r) "
                             "(objectType ?o {obj}Type) (receptacleType ?r {recep}Type))))",
    "pick_clean_then_place_in_recep": "(exists (?r - receptacle) (exists (?o - object) (and (cleanable ?o) "
                                      "(objectType ?o {obj}Type) (receptacleType ?r {recep}Type) (isClean ?o) "
                                      "(inReceptacle ?o ?r))))",
    "pick_heat_then_place_in_recep": "(exists (?r - receptacle) (exists (?o - object) (and (heatable ?o) "
                                     "(objectType ?o {obj}Type) (receptacleType ?r {recep}Type) (isHot ?o) "
                                     "(inReceptacle ?o ?r))))",
    "pick_cool_then_place_in_recep": "(exists (?r - receptacle) (exists (?o - object) (and (coolable ?o) "
                                     "(objectType ?o {obj}Type) (receptacleType ?r {recep}Type) (isCool ?o) "
                                     "(inReceptacle ?o ?r))))",
    "pick_two_obj_and_place": "(exists (?r - receptacle) (exists (?o1 - object) (and (objectType ?o1 {obj}Type) "
                              "(receptacleType ?r {recep}Type) (inReceptacle ?o1 ?r) (exists (?o2 - object) "
                              "(and (not (= ?o1 ?o2)) (objectType ?o2 {obj}Type) (receptacleType ?r {recep}Type) "
                              "(inReceptacle ?o2 ?r))))))",
    "look_at_obj_in_light": "(and (exists (?ot - object ?r - receptacle ?a - agent ?l - location) (and "
                            "(objectType ?ot {toggle}Type) (toggleable ?ot) (isToggled ?ot) "
                            "(receptacleAtLocation ?r ?l) (atLocation ?a ?l) (inReceptacle ?ot ?r))) "
                            "(exists (?o - object ?a - agent) (and (objectType ?o {obj}Type) (holds ?a ?o))))",
}
"""The goals of alfworld ``gen/goal_library.py`` for the six task types (typed with ``-``)."""


def alfworld_logic() -> tuple[str, str]:
    """(``alfred.pddl``, ``alfred.twl2``) text from the installed ``alfworld`` package (never downloaded).

    Raises:
        UserError: the ``[alfworld]`` extra is not installed.
    """
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the real ALFWorld backend needs the [alfworld] extra: {INSTALL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return (data / "alfred.pddl").read_text(encoding="utf-8"), (data / "alfred.twl2").read_text(encoding="utf-8")


def _location(index: int) -> str:
    return f"loc_bar_{index}"


def pddl_problem(world: World) -> str:
    """The PDDL problem of ``world`` (agent in the middle of the room, one location per receptacle)."""
    rtypes = {r.type for r in world.receptacles}
    otypes = {o.type for o in world.objects}
    declared = dict(_DOMAIN_TYPE_CONSTANTS) | {f"{t}Type": "rtype" for t in rtypes}
    declared |= {f"{t}Type": "otype" for t in otypes}
    objects = ["agent1 - agent", _location(0) + " - location"]
    objects += [f"{name} - {kind}" for name, kind in sorted(declared.items())]
    objects += [f"{o.pddl_id} - object" for o in world.objects]
    objects += [f"{r.pddl_id} - receptacle" for r in world.receptacles]
    objects += [f"{_location(i)} - location" for i in range(1, len(world.receptacles) + 1)]
    loc_of = {r.name: _location(i) for i, r in enumerate(world.receptacles, start=1)}
    facts = [f"(atLocation agent1 {_location(0)})"]
    for r in world.receptacles:
        facts += [f"(receptacleAtLocation {r.pddl_id} {loc_of[r.name]})", f"(receptacleType {r.pddl_id} {r.type}Type)"]
        if openable(r.type):
            facts.append(f"(openable {r.pddl_id})")
    for o in world.objects:
        recep = world.receptacle(world.placement[o.name])
        facts += [f"(objectType {o.pddl_id} {o.type}Type)", f"(inReceptacle {o.pddl_id} {recep.pddl_id})",
                  f"(objectAtLocation {o.pddl_id} {loc_of[recep.name]})"]
        if is_lamp(o.type):
            facts.append(f"(toggleable {o.pddl_id})")
        else:
            facts.append(f"(pickupable {o.pddl_id})")
        facts += [f"({prop} {o.pddl_id})" for prop in ("heatable", "coolable", "cleanable", "sliceable")
                  if object_has(o.type, prop)]
    facts += [f"(canContain {rt}Type {ot}Type)" for rt in sorted(rtypes) for ot in sorted(otypes)
              if can_contain(rt, ot)]
    goal = _GOALS[world.task_type].format(obj=world.obj_type, recep=world.recep_type, toggle=world.toggle_type)
    body = "\n    ".join(objects)
    init = "\n    ".join(facts)
    return (f"(define (problem t2po_{world.task_type})\n  (:domain alfred)\n  (:objects\n    {body}\n  )\n"
            f"  (:init\n    {init}\n  )\n  (:goal {goal})\n)\n")


def traj_data(world: World) -> dict[str, object]:
    """The minimal ``traj_data.json`` the pip ``AlfredTWEnv`` accepts (§3.12)."""
    return {
        "task_type": world.task_type,
        "pddl_params": {
            "object_target": world.obj_type,
            "parent_target": world.recep_type or "",
            "toggle_target": world.toggle_type or "",
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": [{"task_desc": world.goal}]},
    }


def task_dir_name(world: World, seed: int) -> str:
    """ALFWorld-style directory, e.g. ``pick_and_place_simple-Apple-None-Fridge-123`` (never "movable"/"Sliced")."""
    parent = world.recep_type or world.toggle_type or "None"
    return f"{world.task_type}-{world.obj_type}-None-{parent}-{seed}"


def write_game(world: World, root: Path, seed: int, logic: tuple[str, str] | None = None) -> Path:
    """Write ``root/<task_dir>/trial_T0/{game.tw-pddl, traj_data.json}``; returns the ``game.tw-pddl`` path."""
    domain, grammar = logic or alfworld_logic()
    trial = Path(root) / task_dir_name(world, seed) / "trial_T0"
    trial.mkdir(parents=True, exist_ok=True)
    game = {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", world.goal),
        "pddl_problem": pddl_problem(world),
        "solvable": True,
        "walkthrough": None,
    }
    (trial / "game.tw-pddl").write_text(json.dumps(game), encoding="utf-8")
    (trial / "traj_data.json").write_text(json.dumps(traj_data(world), indent=1), encoding="utf-8")
    return trial / "game.tw-pddl"


__all__ = ["INSTALL_HINT", "alfworld_logic", "pddl_problem", "traj_data", "write_game"]
