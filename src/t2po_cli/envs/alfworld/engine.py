"""Embedded ALFWorld engine: the ``alfred.pddl`` dynamics and ``alfred.twl2`` texts in pure Python (§3.2-§3.7).

Where envs.md and the real engine (alfworld 0.4.2 + textworld 1.7.0) differ, this follows the real engine,
which §3.2 makes the arbiter; each such place says so. The conformance test in ``test_alfworld_real.py``
plays the same worlds on both and compares every observation and admissible list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from t2po_cli.envs.alfworld.world import (
    SHARP_TYPES,
    TASK_TYPES,
    World,
    can_contain,
    generate_world,
    is_lamp,
    object_has,
    openable,
)
from t2po_cli.envs.base import Task

MAX_STEPS = 50
"""TextWorld ``max_episode_steps`` (§3.7)."""
WIN_REWARD = 10.0
"""Reward is ``10 · won`` (§3.7); the invalid-action penalty belongs to the trainer (§0.1)."""
NOTHING = "Nothing happens."
HELP_TEXT = (
    "Available commands:\n"
    "  look:                             look around your current location\n"
    "  inventory:                        check your current inventory\n"
    "  go to (receptacle):               move to a receptacle\n"
    "  open (receptacle):                open a receptacle\n"
    "  close (receptacle):               close a receptacle\n"
    "  take (object) from (receptacle):  take an object from a receptacle\n"
    "  move (object) to (receptacle):  place an object in or on a receptacle\n"
    "  examine (something):              examine a receptacle or an object\n"
    "  use (object):                     use an object\n"
    "  heat (object) with (receptacle):  heat an object using a receptacle\n"
    "  clean (object) with (receptacle): clean an object using a receptacle\n"
    "  cool (object) with (receptacle):  cool an object using a receptacle\n"
    "  slice (object) with (object):     slice an object using a sharp object\n"
)
"""``help`` feedback of ``alfred.twl2`` as the real engine prints it (leading newline stripped)."""
_APPLIANCE_VERBS = (("heat", "Microwave", "heatable"), ("cool", "Fridge", "coolable"),
                    ("clean", "SinkBasin", "cleanable"))


def render_list(names: list[str]) -> str:
    """``nothing`` / ``a X`` / ``a X, and a Y`` / ``a X, a Y, and a Z`` (§3.2; the article is always "a")."""
    items = [f"a {n}" for n in names]
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + ", and " + items[-1]


@dataclass
class WorldState:
    """Mutable state of one episode. ``location`` None is the middle of the room (the start)."""

    world: World
    location: str | None = None
    holding: str | None = None
    where: dict[str, str] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)
    hot: set[str] = field(default_factory=set)
    cool: set[str] = field(default_factory=set)
    clean: set[str] = field(default_factory=set)
    sliced: set[str] = field(default_factory=set)
    toggled: set[str] = field(default_factory=set)

    @classmethod
    def initial(cls, world: World) -> WorldState:
        return cls(world=world, where=dict(world.placement))

    def contents(self, recep: str) -> list[str]:
        """Objects in ``recep`` in the real engine's list order (sorted PDDL ids)."""
        return [o.name for o in self.world.objects if self.where.get(o.name) == recep]

    def accessible(self, recep: str) -> bool:
        """``(or (not (openable ?r)) (opened ?r))``."""
        return not openable(self.world.receptacle(recep).type) or recep in self.opened

    def describe(self, recep: str) -> str:
        """``examineReceptacle.feedback``."""
        if openable(self.world.receptacle(recep).type):
            if recep in self.opened:
                return f"The {recep} is open. In it, you see {render_list(self.contents(recep))}."
            return f"The {recep} is closed."
        return f"On the {recep}, you see {render_list(self.contents(recep))}."


def intro(world: World) -> str:
    """The reset observation (§3.2): the room overview lists every receptacle, then the goal."""
    names = [r.name for r in world.receptacles]
    look = f"You are in the middle of a room. Looking quickly around you, you see {render_list(names)}."
    return f"-= Welcome to TextWorld, ALFRED! =-\n\n{look}\n\nYour task is to: {world.goal}."


def admissible_commands(state: WorldState) -> list[str]:
    """Every applicable grounded command, sorted and deduplicated, ``help`` included (§3.5).

    Real-engine facts this reproduces: ``go to`` the current receptacle is not applicable; ``examine {o}``
    is only admissible for the held object; ``use`` needs no open receptacle; ``slice`` needs a held knife
    and the sliceable object anywhere at the current location, closed receptacles included.
    """
    world, loc, held = state.world, state.location, state.holding
    cmds = {"help", "inventory", "look"}
    cmds.update(f"go to {r.name}" for r in world.receptacles if r.name != loc)
    if held is not None:
        cmds.add(f"examine {held}")
    if loc is None:
        return sorted(cmds)
    recep = world.receptacle(loc)
    cmds.add(f"examine {loc}")
    if openable(recep.type):
        cmds.add(f"close {loc}" if loc in state.opened else f"open {loc}")
    here = state.contents(loc)
    if held is None and state.accessible(loc):
        cmds.update(f"take {o} from {loc}" for o in here if not is_lamp(world.object(o).type))
    if held is not None:
        held_type = world.object(held).type
        if state.accessible(loc) and can_contain(recep.type, held_type):
            cmds.add(f"move {held} to {loc}")
        for verb, appliance, prop in _APPLIANCE_VERBS:
            if recep.type == appliance and object_has(held_type, prop):
                cmds.add(f"{verb} {held} with {loc}")
        if held_type in SHARP_TYPES:
            cmds.update(f"slice {o} with {held}" for o in here if object_has(world.object(o).type, "sliceable"))
    cmds.update(f"use {o}" for o in here if is_lamp(world.object(o).type))
    return sorted(cmds)


def apply_command(state: WorldState, command: str) -> str:
    """Apply an admissible command (the caller checked it) and return the feedback text (§3.2, §3.4)."""
    loc, words = state.location, command.split()
    if command == "help":
        return HELP_TEXT
    if command == "inventory":
        held = state.holding
        return f"You are carrying: a {held}." if held else "You are not carrying anything."
    if command == "look":
        # The real grammar binds the look to the agent's location, so the middle of the room lists nothing.
        if loc is None:
            return "You are in the middle of a room. Looking quickly around you, you see nothing."
        return f"You are facing the {loc}. Next to it, you see nothing."
    if command.startswith("go to "):
        state.location = command[len("go to "):]
        return f"You arrive at {state.location}. {state.describe(state.location)}"
    if words[0] in ("open", "close"):
        target = command.split(" ", 1)[1]
        if words[0] == "open":
            state.opened.add(target)
            return f"You open the {target}. {state.describe(target)}"
        state.opened.discard(target)
        return f"You close the {target}."
    if words[0] == "examine":
        target = command.split(" ", 1)[1]
        return examine_object(state, target) if target == state.holding else state.describe(target)
    if words[0] == "use":
        # isToggled is never reset by ToggleObject and the feedback is derived after the effect, so the real
        # engine always answers "turn on" (the "turn off" text of §3.2 is unreachable).
        target = command.split(" ", 1)[1]
        state.toggled.add(target)
        return f"You turn on the {target}."
    return _apply_object_command(state, command)


def _apply_object_command(state: WorldState, command: str) -> str:
    """take / move / heat / cool / clean / slice."""
    verb, rest = command.split(" ", 1)
    if verb == "take":
        obj, recep = rest.split(" from ", 1)
        del state.where[obj]
        state.holding = obj
        return f"You pick up the {obj} from the {recep}."
    obj, other = rest.split(" to ", 1) if verb == "move" else rest.split(" with ", 1)
    if verb == "move":
        state.where[obj] = other
        state.holding = None
        return f"You move the {obj} to the {other}."
    if verb == "slice":
        state.sliced.add(obj)
        return f"You sliced the {obj} with the {other}."
    if verb == "heat":
        state.hot.add(obj)
        state.cool.discard(obj)
    elif verb == "cool":
        state.cool.add(obj)
        state.hot.discard(obj)
    else:
        state.clean.add(obj)
    return f"You {verb} the {obj} using the {other}."


def examine_object(state: WorldState, obj: str) -> str:
    """``examineObject.feedback``: the first matching rule of ``alfred.twl2``, in its order."""
    hot, cool, clean, sliced = (obj in s for s in (state.hot, state.cool, state.clean, state.sliced))
    rules = (
        (clean and hot and sliced, f"This is a hot and clean sliced {obj}."),
        (clean and cool and sliced, f"This is a cool and clean sliced {obj}."),
        (clean and sliced, f"This is a clean sliced {obj}."),
        (hot and sliced, f"This is a hot sliced {obj}."),
        (cool and sliced, f"This is a cool sliced {obj}."),
        (clean and hot, f"This is a hot and clean {obj}."),
        (clean and cool, f"This is a cool and clean {obj}."),
        (hot, f"This is a hot {obj}."),
        (clean, f"This is a clean {obj}."),
        (cool, f"This is a cold {obj}."),
        (sliced, f"This is a sliced {obj}."),
    )
    return next((text for cond, text in rules if cond), f"There's nothing special about {obj}.")


def is_won(state: WorldState) -> bool:
    """The goal of the task type, as in alfworld ``goal_library.py`` (§3.6).

    Types 1/3/4/5: some object of type O (clean/hot/cool as required) is in some receptacle of type R.
    Type 6: two distinct objects of type O in the *same* receptacle instance (the PDDL goal binds one ``?r``).
    Type 2: holding an object of type O while a toggled lamp of the goal type is in a receptacle at the
    agent's location (``isToggled`` is sticky: it records that the lamp was switched on at some point).
    """
    world = state.world
    if world.task_type == "look_at_obj_in_light":
        if state.holding is None or world.object(state.holding).type != world.obj_type:
            return False
        return any(world.object(o).type == world.toggle_type and o in state.toggled
                   for o in state.contents(state.location)) if state.location else False
    required = {"pick_clean_then_place_in_recep": state.clean, "pick_heat_then_place_in_recep": state.hot,
                "pick_cool_then_place_in_recep": state.cool}.get(world.task_type)
    per_recep: dict[str, int] = {}
    for obj in world.objects:
        recep = state.where.get(obj.name)
        if obj.type != world.obj_type or recep is None or world.receptacle(recep).type != world.recep_type:
            continue
        if required is not None and obj.name not in required:
            continue
        per_recep[recep] = per_recep.get(recep, 0) + 1
    need = 2 if world.task_type == "pick_two_obj_and_place" else 1
    return any(n >= need for n in per_recep.values())


def world_for(task: Task) -> World:
    """Rebuild the task's world from its payload (deterministic, §0.1)."""
    payload = task.payload
    return generate_world(task.seed, payload["task_type"], int(payload.get("difficulty", 1)))


class AlfworldEnv:
    """One embedded ALFWorld episode (the ``TextEnv`` protocol, §0.1).

    ``step`` matches the command exactly after stripping whitespace, as TextWorld's ``PddlEnv`` does;
    anything else is ``Nothing happens.`` and still counts as a step. After ``done`` it returns the cached
    terminal result.
    """

    def __init__(self, max_steps: int = MAX_STEPS) -> None:
        self.max_steps = max_steps
        self._state: WorldState | None = None
        self._steps = 0
        self._terminal: tuple[str, float, bool, dict[str, Any]] | None = None
        self._admissible: list[str] = []

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        return self.reset_world(world_for(task))

    def reset_world(self, world: World) -> tuple[str, dict[str, Any]]:
        """Start an episode on an explicit world (hand-built worlds in tests, exported games)."""
        self._state = WorldState.initial(world)
        self._steps = 0
        self._terminal = None
        obs = intro(world)
        return obs, self._info(obs, won=False)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("step() before reset()")
        if self._terminal is not None:
            return self._terminal
        command = str(action).strip()
        obs = apply_command(self._state, command) if command in self._admissible else NOTHING
        self._steps += 1
        won = is_won(self._state)
        done = won or self._steps >= self.max_steps
        info = self._info(obs, won=won)
        result = (obs, WIN_REWARD if won else 0.0, done, info)
        if done:
            self._terminal = result
        return result

    def close(self) -> None:
        self._state = None

    def _info(self, obs: str, *, won: bool) -> dict[str, Any]:
        assert self._state is not None
        self._admissible = admissible_commands(self._state)
        world = self._state.world
        return {
            "won": won,
            "admissible": list(self._admissible),
            "task_score": 1.0 if won else 0.0,
            "anchor_obs": obs,
            "task_type": world.task_type,
            "task_type_id": world.task_type_id,
            "steps": self._steps,
        }


__all__ = [
    "MAX_STEPS",
    "TASK_TYPES",
    "AlfworldEnv",
    "WorldState",
    "admissible_commands",
    "apply_command",
    "intro",
    "is_won",
    "render_list",
    "world_for",
]
