"""Scripted ALFWorld policies: a full-knowledge expert that solves every task and a uniform random policy.

The expert is the analogue of alfworld's planner expert (``expert_type: planner``): it knows where every
object is, so its plan is short (at most 14 commands, well inside the 50-step limit of §3.7) and it never
needs to explore. Plans depend only on the task, so they are computed once per task and replayed by turn.
"""

from __future__ import annotations

import random
from typing import Any

from t2po_cli.envs.alfworld.engine import world_for
from t2po_cli.envs.alfworld.world import APPLIANCE, World, openable
from t2po_cli.envs.base import Policy, Task

_VERB = {"SinkBasin": "clean", "Microwave": "heat", "Fridge": "cool"}


def respond(thought: str, action: str) -> str:
    """The trained response format (§0.3 item 5)."""
    return f"<think>{thought}</think>\n<action>{action}</action>"


class _Planner:
    """Builds the command list while tracking where the agent is and what it has opened."""

    def __init__(self) -> None:
        self.location: str | None = None
        self.opened: set[str] = set()
        self.steps: list[tuple[str, str]] = []

    def go(self, recep: str, why: str) -> None:
        if self.location != recep:
            self.steps.append((f"go to {recep}", why))
            self.location = recep

    def open_if_needed(self, recep: str, type_name: str) -> None:
        if openable(type_name) and recep not in self.opened:
            self.steps.append((f"open {recep}", f"The {recep} is closed, so I open it."))
            self.opened.add(recep)


def expert_plan(world: World) -> list[tuple[str, str]]:
    """(command, thought) pairs that reach the goal from the start state (§3.11 solvability)."""
    plan = _Planner()
    obj_type = world.obj_type.lower()
    goal_objects = [o.name for o in world.objects if o.type == world.obj_type]
    goal_objects = goal_objects[: 2 if world.task_type == "pick_two_obj_and_place" else 1]
    target = next((r for r in world.receptacles if r.type == world.recep_type), None)
    for obj in goal_objects:
        source = world.receptacle(world.placement[obj])
        plan.go(source.name, f"I need a {obj_type}; {obj} is in {source.name}, so I go there.")
        plan.open_if_needed(source.name, source.type)
        plan.steps.append((f"take {obj} from {source.name}", f"I see {obj} here, so I pick it up."))
        appliance_type = APPLIANCE.get(world.task_type)
        if appliance_type is not None:
            appliance = next(r for r in world.receptacles if r.type == appliance_type)
            verb = _VERB[appliance_type]
            plan.go(appliance.name, f"I am holding {obj}; I need to {verb} it with {appliance.name}.")
            plan.steps.append((f"{verb} {obj} with {appliance.name}", f"Now I {verb} {obj}."))
        if world.task_type == "look_at_obj_in_light":
            lamp = next(o for o in world.objects if o.type == world.toggle_type)
            surface = world.placement[lamp.name]
            plan.go(surface, f"I am holding {obj}; the {lamp.name} is on {surface}, so I go there.")
            plan.steps.append((f"use {lamp.name}", f"I turn on {lamp.name} to look at {obj} under it."))
            continue
        assert target is not None
        plan.go(target.name, f"I am holding {obj}; the goal receptacle is {target.name}.")
        plan.open_if_needed(target.name, target.type)
        plan.steps.append((f"move {obj} to {target.name}", f"I put {obj} in {target.name}."))
    return plan.steps


def expert_policy(seed: int) -> Policy:
    """Policy replaying ``expert_plan`` by turn; ``seed`` is unused (the expert is deterministic)."""
    del seed
    cache: dict[tuple[int, str, int, str], list[tuple[str, str]]] = {}

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        key = (task.seed, task.split, task.index, str(task.payload.get("task_type")))
        if key not in cache:
            cache[key] = expert_plan(world_for(task))
        steps = cache[key]
        if turn < len(steps):
            action, thought = steps[turn]
            return respond(f"My task is to {task.instruction}. {thought}", action)
        return respond("The plan is finished; I look around.", "look")

    return act


def random_policy(seed: int) -> Policy:
    """Uniformly random admissible command (``help`` included), seeded."""
    rng = random.Random(seed)

    def act(task: Task, obs: str, info: dict[str, Any], turn: int) -> str:
        choices = list(info.get("admissible") or ["look"])
        return respond("I pick an admissible action at random.", rng.choice(choices))

    return act
