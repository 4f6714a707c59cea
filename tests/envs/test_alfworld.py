"""Embedded ALFWorld (envs.md §3): texts, grammar, admissible sets, goals, policies, determinism, prompts.

Expected strings are written by hand from §3.2/§3.5 and from the real engine's grammar (``alfred.twl2``);
``test_alfworld_real.py`` checks the same behaviour against the real engine.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2po_cli.config.schema import EnvConfig
from t2po_cli.envs.alfworld import FAMILY, make_task, sample_tasks
from t2po_cli.envs.alfworld.engine import HELP_TEXT, NOTHING, AlfworldEnv, render_list
from t2po_cli.envs.alfworld.experts import expert_plan
from t2po_cli.envs.alfworld.gamefile import pddl_problem, traj_data, write_game
from t2po_cli.envs.alfworld.prompts import TEMPLATE_VERSION, task_from_intro
from t2po_cli.envs.alfworld.world import TASK_TYPES, Entity, World, catalogue, generate_world
from t2po_cli.envs.base import HistoryEntry
from t2po_cli.envs.registry import get_family
from t2po_cli.errors import UserError

_TYPES = {t.lower(): t for t in (*catalogue()["receptacles"], *catalogue()["objects"], *catalogue()["lamps"])}


def _entity(name: str) -> Entity:
    type_name, index = name.rsplit(" ", 1)
    return Entity(_TYPES[type_name], int(index))


def hand_world(task_type: str, goal: str, obj: str, recep: str | None, placement: dict[str, str],
               receptacles: list[str], toggle: str | None = None) -> World:
    """A hand-built world: ``placement`` maps object names to receptacle names."""
    return World(
        task_type=task_type, goal=goal, obj_type=obj, recep_type=recep, toggle_type=toggle,
        receptacles=tuple(sorted((_entity(r) for r in receptacles), key=lambda e: e.sort_key)),
        objects=tuple(sorted((_entity(o) for o in placement), key=lambda e: e.sort_key)),
        placement=dict(placement),
    )


KITCHEN = hand_world(
    "pick_and_place_simple", "put a mug in fridge", "Mug", "Fridge",
    {"apple 1": "countertop 1", "knife 1": "countertop 1", "mug 1": "cabinet 2", "desklamp 1": "sidetable 1"},
    ["cabinet 1", "cabinet 2", "countertop 1", "fridge 1", "microwave 1", "sidetable 1", "sinkbasin 1"],
)


def play(world: World, commands: list[str]) -> tuple[AlfworldEnv, list[tuple[str, float, bool, dict]]]:
    env = AlfworldEnv()
    env.reset_world(world)
    return env, [env.step(c) for c in commands]


def test_render_list_forms():
    assert render_list([]) == "nothing"
    assert render_list(["apple 1"]) == "a apple 1"
    assert render_list(["apple 1", "mug 1"]) == "a apple 1, and a mug 1"
    assert render_list(["apple 1", "mug 1", "cd 2"]) == "a apple 1, a mug 1, and a cd 2"


def test_intro_and_initial_admissible():
    obs, info = AlfworldEnv().reset_world(KITCHEN)
    assert obs == (
        "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, you "
        "see a cabinet 2, a cabinet 1, a countertop 1, a fridge 1, a microwave 1, a sidetable 1, and a "
        "sinkbasin 1.\n\nYour task is to: put a mug in fridge."
    )
    assert info["admissible"] == [
        "go to cabinet 1", "go to cabinet 2", "go to countertop 1", "go to fridge 1", "go to microwave 1",
        "go to sidetable 1", "go to sinkbasin 1", "help", "inventory", "look",
    ]
    assert info["won"] is False and info["task_score"] == 0.0 and info["anchor_obs"] == obs
    assert info["task_type"] == "pick_and_place_simple" and info["task_type_id"] == 1
    assert task_from_intro(obs) == "put a mug in fridge"


def test_feedback_strings_and_admissible_along_a_walk():
    walk = [
        ("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1."),
        ("go to countertop 1", NOTHING),
        ("look", "You are facing the countertop 1. Next to it, you see nothing."),
        ("examine apple 1", NOTHING),
        ("take knife 1 from countertop 1", "You pick up the knife 1 from the countertop 1."),
        ("slice apple 1 with knife 1", "You sliced the apple 1 with the knife 1."),
        ("inventory", "You are carrying: a knife 1."),
        ("examine knife 1", "There's nothing special about knife 1."),
        ("go to cabinet 2", "You arrive at cabinet 2. The cabinet 2 is closed."),
        ("open cabinet 2", "You open the cabinet 2. The cabinet 2 is open. In it, you see a mug 1."),
        ("move knife 1 to cabinet 2", NOTHING),  # cabinets cannot contain knives (canContain)
        ("take mug 1 from cabinet 2", NOTHING),  # hands are full
        ("go to countertop 1", "You arrive at countertop 1. On the countertop 1, you see a apple 1."),
        ("move knife 1 to countertop 1", "You move the knife 1 to the countertop 1."),
        ("inventory", "You are not carrying anything."),
        ("go to cabinet 2", "You arrive at cabinet 2. The cabinet 2 is open. In it, you see a mug 1."),
        ("take mug 1 from cabinet 2", "You pick up the mug 1 from the cabinet 2."),
        ("close cabinet 2", "You close the cabinet 2."),
        ("examine cabinet 2", "The cabinet 2 is closed."),
        ("go to microwave 1", "You arrive at microwave 1. The microwave 1 is closed."),
        ("heat mug 1 with microwave 1", "You heat the mug 1 using the microwave 1."),
        ("examine mug 1", "This is a hot mug 1."),
        ("go to sinkbasin 1", "You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing."),
        ("clean mug 1 with sinkbasin 1", "You clean the mug 1 using the sinkbasin 1."),
        ("examine mug 1", "This is a hot and clean mug 1."),
        ("go to sidetable 1", "You arrive at sidetable 1. On the sidetable 1, you see a desklamp 1."),
        ("use desklamp 1", "You turn on the desklamp 1."),
        ("use desklamp 1", "You turn on the desklamp 1."),  # isToggled is sticky in alfred.pddl
        ("go to fridge 1", "You arrive at fridge 1. The fridge 1 is closed."),
        ("cool mug 1 with fridge 1", "You cool the mug 1 using the fridge 1."),
        ("examine mug 1", "This is a cool and clean mug 1."),
        ("move mug 1 to fridge 1", NOTHING),  # the fridge is closed
        ("help", HELP_TEXT),
        ("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see nothing."),
    ]
    _, results = play(KITCHEN, [c for c, _ in walk])
    for (command, expected), (obs, reward, done, info) in zip(walk, results, strict=True):
        assert obs == expected, command
        assert (reward, done, info["won"]) == (0.0, False, False), command
    assert results[-1][3]["steps"] == len(walk)
    assert results[4][3]["admissible"] == [
        "examine countertop 1", "examine knife 1", "go to cabinet 1", "go to cabinet 2", "go to fridge 1",
        "go to microwave 1", "go to sidetable 1", "go to sinkbasin 1", "help", "inventory", "look",
        "move knife 1 to countertop 1", "slice apple 1 with knife 1",
    ]
    assert results[-1][3]["admissible"] == [
        "close fridge 1", "cool mug 1 with fridge 1", "examine fridge 1", "examine mug 1", "go to cabinet 1",
        "go to cabinet 2", "go to countertop 1", "go to microwave 1", "go to sidetable 1", "go to sinkbasin 1",
        "help", "inventory", "look", "move mug 1 to fridge 1",
    ]


def test_observed_admissible_example_after_move_into_open_cabinet():
    """§3.5's observed list, with a mug for the apple (ALFRED's canContain has no apples in cabinets)."""
    world = hand_world("pick_and_place_simple", "put a mug in fridge", "Mug", "Fridge",
                       {"mug 1": "countertop 1"}, ["cabinet 1", "countertop 1", "fridge 1"])
    _, results = play(world, ["go to countertop 1", "take mug 1 from countertop 1", "go to cabinet 1",
                              "open cabinet 1", "move mug 1 to cabinet 1"])
    assert results[-1][0] == "You move the mug 1 to the cabinet 1."
    assert results[-1][3]["admissible"] == [
        "close cabinet 1", "examine cabinet 1", "go to countertop 1", "go to fridge 1", "help", "inventory",
        "look", "take mug 1 from cabinet 1",
    ]


def test_look_in_the_middle_of_the_room_lists_nothing():
    """The real grammar binds ``look`` to the agent's location (no receptacle there at the start)."""
    _, results = play(KITCHEN, ["look"])
    assert results[0][0] == "You are in the middle of a room. Looking quickly around you, you see nothing."


def _won_flags(world: World, commands: list[str]) -> list[bool]:
    return [info["won"] for _, _, _, info in play(world, commands)[1]]


def test_won_pick_and_place_simple():
    world = hand_world("pick_and_place_simple", "put a apple in fridge", "Apple", "Fridge",
                       {"apple 1": "countertop 1"}, ["countertop 1", "fridge 1"])
    flags = _won_flags(world, ["go to countertop 1", "take apple 1 from countertop 1", "go to fridge 1",
                               "open fridge 1", "move apple 1 to fridge 1"])
    assert flags == [False, False, False, False, True]


@pytest.mark.parametrize(("task_type", "appliance", "verb"), [
    ("pick_clean_then_place_in_recep", "sinkbasin 1", "clean"),
    ("pick_heat_then_place_in_recep", "microwave 1", "heat"),
    ("pick_cool_then_place_in_recep", "fridge 1", "cool"),
])
def test_won_state_change_tasks_need_the_state(task_type, appliance, verb):
    world = hand_world(task_type, f"{verb} some apple and put it in diningtable", "Apple", "DiningTable",
                       {"apple 1": "countertop 1"}, ["countertop 1", "diningtable 1", appliance])
    flags = _won_flags(world, [
        "go to countertop 1", "take apple 1 from countertop 1", "go to diningtable 1",
        "move apple 1 to diningtable 1",  # placed, but not yet clean/hot/cool
        "take apple 1 from diningtable 1", f"go to {appliance}", f"{verb} apple 1 with {appliance}",
        "go to diningtable 1", "move apple 1 to diningtable 1",
    ])
    assert flags == [False] * 8 + [True]


def test_heat_then_cool_is_no_longer_hot():
    world = hand_world("pick_heat_then_place_in_recep", "put a hot apple in diningtable", "Apple", "DiningTable",
                       {"apple 1": "countertop 1"}, ["countertop 1", "diningtable 1", "fridge 1", "microwave 1"])
    flags = _won_flags(world, ["go to countertop 1", "take apple 1 from countertop 1", "go to microwave 1",
                               "heat apple 1 with microwave 1", "go to fridge 1", "cool apple 1 with fridge 1",
                               "go to diningtable 1", "move apple 1 to diningtable 1"])
    assert flags == [False] * 8


def test_won_two_objects_need_the_same_receptacle_instance():
    world = hand_world("pick_two_obj_and_place", "put two mug in cabinet", "Mug", "Cabinet",
                       {"mug 1": "countertop 1", "mug 2": "countertop 1"}, ["cabinet 1", "cabinet 2", "countertop 1"])
    flags = _won_flags(world, [
        "go to countertop 1", "take mug 1 from countertop 1", "go to cabinet 1", "open cabinet 1",
        "move mug 1 to cabinet 1", "go to countertop 1", "take mug 2 from countertop 1", "go to cabinet 2",
        "open cabinet 2", "move mug 2 to cabinet 2",  # one mug in each cabinet: not won
        "take mug 2 from cabinet 2", "go to cabinet 1", "move mug 2 to cabinet 1",
    ])
    assert flags == [False] * 12 + [True]


def test_won_look_at_object_in_light():
    world = hand_world("look_at_obj_in_light", "look at book under the desklamp", "Book", None,
                       {"book 1": "desk 1", "desklamp 1": "sidetable 1"}, ["desk 1", "sidetable 1"],
                       toggle="DeskLamp")
    flags = _won_flags(world, [
        "go to sidetable 1", "use desklamp 1",  # lamp on, nothing held
        "go to desk 1", "take book 1 from desk 1",  # holding the book, lamp elsewhere
        "go to sidetable 1",  # the lamp stays toggled: won on arrival
    ])
    assert flags == [False, False, False, False, True]


def test_reward_termination_and_cached_terminal_step():
    world = hand_world("pick_and_place_simple", "put some apple on countertop", "Apple", "CounterTop",
                       {"apple 1": "diningtable 1"}, ["countertop 1", "diningtable 1"])
    env, results = play(world, ["go to diningtable 1", "take apple 1 from diningtable 1", "go to countertop 1",
                                "move apple 1 to countertop 1"])
    _, reward, done, info = results[-1]
    assert (reward, done, info["won"], info["task_score"]) == (10.0, True, True, 1.0)
    assert env.step("look") == results[-1]
    assert env.step("go to diningtable 1") == results[-1]


def test_episode_ends_after_50_steps():
    env = AlfworldEnv()
    env.reset_world(KITCHEN)
    results = [env.step("look") for _ in range(50)]
    assert [r[2] for r in results] == [False] * 49 + [True]
    assert results[-1][1] == 0.0 and results[-1][3]["won"] is False
    assert env.step("go to fridge 1") == results[-1]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_step_never_crashes_on_arbitrary_text(text):
    env = AlfworldEnv()
    _, info = env.reset_world(KITCHEN)
    obs, reward, done, new_info = env.step(text)
    if text.strip() not in info["admissible"]:
        assert obs == NOTHING and new_info["admissible"] == info["admissible"]
    assert reward == 0.0 and done is False and new_info["steps"] == 1


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["go to fridge 1", "help", "look"]))
def test_projection_fuzz(text, command):
    admissible = ["go to fridge 1", "help", "look"]
    proj = FAMILY.project(text, admissible)
    assert isinstance(proj.action, str)
    if proj.valid:
        assert proj.format_valid and proj.action in admissible
    wrapped = FAMILY.project(f"<think>{text.replace('<', '')}</think><action>{command}</action>", admissible)
    if not any("\u4e00" <= ch <= "\u9fff" for ch in text):
        assert (wrapped.action, wrapped.valid, wrapped.format_valid) == (command, True, True)


@pytest.mark.parametrize(("text", "admissible", "expected"), [
    ("<think>x</think><action>help</action>", ["help", "look"], ("help", True, True)),
    ("<think>x</think><action> Go To Fridge 1 </action>", ["go to fridge 1"], ("go to fridge 1", True, True)),
    ("<think>x</think><action>go to sofa 1</action>", ["go to fridge 1", "help"], ("go to sofa 1", False, True)),
    ("<think>x</think><action>look</action>", None, ("look", True, True)),  # errata 12: no list
    ("<think>x</think><action>look</action>", [], ("look", False, True)),  # errata 12: empty list
    ("<action>look</action>", ["look"], ("look", False, False)),  # missing <think>
    # no <action>: the last 30 characters of the raw text, case kept (§0.4 step 3)
    ("I will JUST look around the room now", ["look"], (" JUST look around the room now", False, False)),
])
def test_projection_table(text, admissible, expected):
    proj = FAMILY.project(text, admissible)
    assert (proj.action, proj.valid, proj.format_valid) == expected


def test_expert_and_random_over_200_episodes():
    tasks = sample_tasks("train", range(200), 0, 1)
    rates = {}
    for name, policy in (("expert", FAMILY.expert_policy(0)), ("random", FAMILY.random_policy(0))):
        wins = 0
        for task in tasks:
            env = FAMILY.make_env(EnvConfig(name="alfworld"))
            obs, info = env.reset(task)
            for turn in range(50):
                proj = FAMILY.project(policy(task, obs, info, turn), info["admissible"])
                obs, _, done, info = env.step(proj.action)
                if done:
                    break
            wins += info["won"]
        rates[name] = wins / len(tasks)
    assert rates["expert"] >= 0.99
    assert rates["random"] < 0.10


def test_every_generated_task_has_a_short_expert_plan():
    for task_type in TASK_TYPES.values():
        for seed in range(40):
            world = generate_world(seed, task_type, 3)
            assert 5 <= len(world.receptacles) <= 25
            assert len(expert_plan(world)) <= 50
            env = AlfworldEnv()
            _, info = env.reset_world(world)
            assert not info["won"]
            for command, _ in expert_plan(world):
                assert command in info["admissible"], (task_type, seed, command)
                _, _, _, info = env.step(command)
            assert info["won"], (task_type, seed)


def test_determinism_and_splits():
    a = sample_tasks("train", range(12), 7, 1)
    assert a == sample_tasks("train", range(12), 7, 1)
    assert [t.payload["task_type"] for t in a[:6]] == list(TASK_TYPES.values())
    val = sample_tasks("val", range(12), 7, 1)
    assert {t.seed for t in a}.isdisjoint({t.seed for t in val})
    with pytest.raises(UserError):
        sample_tasks("test", [0], 0, 1)
    transcripts = []
    for _ in range(2):  # fresh env and fresh seeded policy: identical transcripts (§0.1)
        policy = FAMILY.random_policy(3)
        env = AlfworldEnv()
        obs, info = env.reset(a[1])
        rows: list[object] = [obs]
        for turn in range(30):
            action = FAMILY.project(policy(a[1], obs, info, turn), info["admissible"]).action
            obs, reward, done, info = env.step(action)
            rows.append((action, obs, reward, done, json.dumps(info, sort_keys=True)))
        transcripts.append(rows)
    assert transcripts[0] == transcripts[1]


def test_prompt_structure():
    task = make_task("train", 0, 0)
    env = AlfworldEnv()
    obs, info = env.reset(task)
    first = FAMILY.build_prompt(task, [], obs, info, turn=0, history_length=2)
    assert obs in first and f"Your task is to: {task.instruction}." in first
    assert "'help'" not in first and "'look'" in first and "<think> </think>" in first
    history = [HistoryEntry(observation=obs, action="look"), HistoryEntry(observation="o2", action="inventory"),
               HistoryEntry(observation="o3", action="look")]
    later = FAMILY.build_prompt(task, history, "Nothing happens.", info, turn=3, history_length=2)
    assert "already taken 3 step(s)" in later and "at step 4" in later
    assert "[Observation 2: 'o2', Action 2: 'inventory']" in later
    assert "[Observation 3: 'o3', Action 3: 'look']" in later and "Observation 1:" not in later
    assert FAMILY.template_version == TEMPLATE_VERSION and TEMPLATE_VERSION.startswith("alfworld-v1-")


def test_registry_and_expert_dialogues():
    from t2po_cli.envs.registry import expert_dialogues

    assert get_family("alfworld") is FAMILY and FAMILY.stop_strings == ("</action>",)
    dialogues = list(expert_dialogues("alfworld", 3, 0, history_length=2, max_turns=50))
    assert len(dialogues) == 3 and all(d and d[-1][1].endswith("</action>") for d in dialogues)


def test_game_file_export(tmp_path):
    world = generate_world(5, "pick_two_obj_and_place", 1)
    problem = pddl_problem(world)
    assert "(atLocation agent1 loc_bar_0)" in problem and "(not (= ?o1 ?o2))" in problem
    for r in world.receptacles:
        assert f"(receptacleType {r.pddl_id} {r.type}Type)" in problem
    path = write_game(world, tmp_path, 5, logic=("(define (domain alfred))", 'Your task is to: UNKNOWN GOAL.'))
    game = json.loads(path.read_text())
    assert game["grammar"] == f"Your task is to: {world.goal}." and game["solvable"] is True
    assert path.parent.name == "trial_T0" and "movable" not in str(path) and "Sliced" not in str(path)
    traj = json.loads((path.parent / "traj_data.json").read_text())
    assert traj == traj_data(world) and traj["pddl_params"]["object_target"] == world.obj_type
    assert traj["turk_annotations"]["anns"][0]["task_desc"] == world.goal
