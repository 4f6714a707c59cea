"""Embedded Search-QA: EM, dynamics, <information> format, retrieval solvability, prompt, policies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2po_cli.config.schema import EnvConfig
from t2po_cli.envs.base import HistoryEntry, Task
from t2po_cli.envs.searchqa import FAMILY, _embedded_retriever
from t2po_cli.envs.searchqa.env import SearchQAEnv, exact_match, last_answer, normalize_answer
from t2po_cli.envs.searchqa.kb import build_kb
from t2po_cli.envs.searchqa.retriever import format_information

TASK = Task("searchqa", "val", 0, 0, "Who wrote it?", gold_answers=("The Beatles", "Lennon"),
            payload={"data_source": "synthetic_single"})


def _env(docs=("\"T\"\nfirst", "\"U\"\nsecond")):
    calls = []

    def retrieve(query, k):
        calls.append((query, k))
        return list(docs)

    return SearchQAEnv(retrieve), calls


@pytest.mark.parametrize(("text", "expected"), [
    ("The  Beatles!", "beatles"), ("an Apple, a day", "apple day"), ("  U.S.A. ", "usa"),
    ("Theatre", "theatre"), ("A", ""), ("Rock\tand\nroll", "rock and roll"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_last_answer_wins():
    assert exact_match("the beatles.", ["The Beatles"]) == 1.0
    assert exact_match("Beatles band", ["The Beatles"]) == 0.0
    assert last_answer("<answer>a</answer> x <answer> b </answer>") == "b"
    assert last_answer("<ANSWER>a</ANSWER>") is None  # the release's pattern is case-sensitive


def test_information_format_exact():
    assert format_information(["\"T\"\nfirst", "x"]) == \
        '\n<information>{"result": "Doc 1: \\"T\\"\\nfirst\\nDoc 2: x\\n"}</information>\n'
    assert format_information([]) == '\n<information>{"result": "No search results found."}</information>\n'
    assert format_information(None, error="boom") == \
        '\n<information>{"result": "Search error: boom"}</information>\n'


def test_dynamics_search_then_answer():
    env, calls = _env()
    obs, info = env.reset(TASK)
    assert obs == "Who wrote it?" and info["anchor_obs"] == obs and info["admissible"] is None
    obs, r, done, info = env.step("<search>who wrote</search>")
    assert calls == [("who wrote", 3)] and not done and r == 0.0
    assert obs == format_information(["\"T\"\nfirst", "\"U\"\nsecond"]) and info["anchor_obs"] == obs
    assert env.step("")[:3] == ("", 0.0, False)            # invalid/empty action: empty observation
    obs, r, done, info = env.step("<answer>Lennon</answer>")
    assert (obs, r, done, info["won"], info["task_score"]) == ("", 1.0, True, True, 1.0)
    assert env.step("<answer>x</answer>") == (obs, r, done, info)  # post-done: cached


def test_fourth_turn_ends_and_last_answer_in_history_counts():
    env, calls = _env()
    env.reset(TASK)
    for _ in range(3):
        assert env.step("<search>q</search>")[2] is False
    obs, r, done, info = env.step("<search>q</search>")     # turn 4: no retrieval, no answer
    assert (obs, r, done, info["won"]) == ("", 0.0, True, False) and len(calls) == 3
    env.reset(TASK)
    assert env.step("<answer>wrong</answer> <answer>The Beatles</answer>")[1] == 1.0  # last answer wins
    env2, _ = _env()
    env2.reset(TASK)
    assert env2.step("<answer>The Beatles</answer>")[1] == 1.0
    # an unclosed answer does not end the episode
    env3, _ = _env()
    env3.reset(TASK)
    assert env3.step("<answer>The Beatles")[2] is False


def test_retrieval_failure_is_an_observation():
    def broken(query, k):
        raise OSError("connection reset")

    env = SearchQAEnv(broken)
    env.reset(TASK)
    obs = env.step("<search>q</search>")[0]
    assert json.loads(obs.strip()[len("<information>"):-len("</information>")]) == {
        "result": "Search error: connection reset"}


def test_every_hop_gold_passage_in_top3():
    kb = build_kb()
    retriever = _embedded_retriever(1, 0)
    assert len(kb.docs) > 500 and len(kb.questions) > 500
    assert {q["data_source"] for q in kb.questions} == {"synthetic_single", "synthetic_bridge"}
    for q in kb.questions:
        for hop in q["hops"]:
            assert hop["doc_id"] in [d["id"] for d, _ in retriever.search(hop["query"], 3)], hop
            assert hop["answer"] in kb.docs[int(hop["doc_id"])]["contents"]


def _episode(task, policy):
    env = FAMILY.make_env(EnvConfig(name="searchqa", max_turns=4))
    obs, info = env.reset(task)
    for t in range(4):
        obs, _, done, info = env.step(FAMILY.project(policy(task, obs, info, t), None).action)
        if done:
            break
    return info


def test_expert_and_random_rates():
    tasks = FAMILY.sample_tasks("train", list(range(200)), 0, 1)
    expert, rand = FAMILY.expert_policy(0), FAMILY.random_policy(0)
    assert sum(_episode(t, expert)["won"] for t in tasks) / 200 >= 0.99
    assert sum(_episode(t, rand)["won"] for t in tasks) / 200 < 0.10


def test_tasks_deterministic_with_gold_answers():
    a = FAMILY.sample_tasks("train", list(range(20)), 5, 1)
    assert a == FAMILY.sample_tasks("train", list(range(20)), 5, 1)
    assert all(t.gold_answers and t.payload["hops"] for t in a)
    val = FAMILY.sample_tasks("val", [0, 1], 0, 1)
    assert [t.payload["question_idx"] for t in val] == [0, 1]
    assert FAMILY.has_gold_answers and FAMILY.stop_strings == ("</search>", "</answer>")
    assert FAMILY.forced_answer_prompt == "\nNow there's enough information to answer\n</think>\n<answer>\n"


def test_deterministic_transcript():
    task = FAMILY.sample_tasks("val", [3], 0, 1)[0]
    actions = ["<search>capital</search>", "", "<search>city located</search>", "<answer>x</answer>"]

    def run():
        env = FAMILY.make_env(EnvConfig(name="searchqa"))
        return [env.reset(task)] + [env.step(a) for a in actions]

    assert run() == run()


def test_prompt_history_lines():
    env, _ = _env()
    obs0, info = env.reset(TASK)
    p0 = FAMILY.build_prompt(TASK, [], obs0, info, turn=0, history_length=4)
    assert "Your question: Who wrote it?" in p0 and "<answer>Paris</answer>" in p0
    obs1, _, _, _info1 = env.step("<search>q1</search>")
    obs2, _, _, info2 = env.step("")
    history = [HistoryEntry(obs0, "<search>q1</search>"), HistoryEntry(obs1, "")]
    p = FAMILY.build_prompt(TASK, history, obs2, info2, turn=2, history_length=4)
    assert f"Step 1:<search>q1</search> {obs1}\nStep 2: " in p
    assert "already taken 2 step(s)" in p
    p1 = FAMILY.build_prompt(TASK, history, obs2, info2, turn=2, history_length=1)
    assert "Step 1:" not in p1 and "Step 2: " in p1


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=6))
def test_step_with_arbitrary_strings_never_crashes(texts):
    task = FAMILY.sample_tasks("val", [1], 0, 1)[0]
    env = FAMILY.make_env(EnvConfig(name="searchqa"))
    env.reset(task)
    for text in texts:
        for action in (text, FAMILY.project(text, None).action):
            obs, reward, _done, info = env.step(action)
            assert isinstance(obs, str) and reward in (0.0, 1.0)
            assert {"won", "admissible", "task_score", "anchor_obs"} <= set(info)
