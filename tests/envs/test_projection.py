"""Projection rules (envs.md §0.4, errata 11-12): hand-written cases and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2po_cli.envs.base import Projection
from t2po_cli.envs.projection import project_search, project_think_action

ADM = ["go to cabinet 1", "help", "look"]


@pytest.mark.parametrize(
    ("text", "admissible", "check", "expected"),
    [
        # strict pass, case-insensitive tags, action lower-cased and stripped
        ("<think>ok</think><action> Click[Buy Now] </action>", None, False, Projection("click[buy now]", True, True)),
        ("  <THINK>a\nb</Think>\n<Action>search[red shoes]</ACTION>\n", None, False,
         Projection("search[red shoes]", True, True)),
        # WebShop: no admissible check even with a list
        ("<think>x</think><action>anything</action>", ["other"], False, Projection("anything", True, True)),
        # ALFWorld admissible check, help included, case-insensitive membership
        ("<think>x</think><action>Go To Cabinet 1</action>", ADM, True, Projection("go to cabinet 1", True, True)),
        ("<think>x</think><action>help</action>", ADM, True, Projection("help", True, True)),
        ("<think>x</think><action>go to fridge 1</action>", ADM, True, Projection("go to fridge 1", False, True)),
        # errata 12: no list -> valid on format; empty list -> invalid
        ("<think>x</think><action>look</action>", None, True, Projection("look", True, True)),
        ("<think>x</think><action>look</action>", [], True, Projection("look", False, True)),
        # missing <think>: fallback 2 (first action block)
        ("<action>Look</action>", ADM, True, Projection("look", False, False)),
        # duplicate tags fail the strict pass; first action block wins
        ("<think>a</think><think>b</think><action>look</action>", ADM, True, Projection("look", False, False)),
        ("<think>a</think><action>A1</action><action>b</action>", None, False, Projection("a1", False, False)),
        # whitespace around the tag name counts as a second tag when counting
        ("<think>a</ think ></think><action>look</action>", ADM, True, Projection("look", False, False)),
        ("<think>a< think ></think><action>look</action>", ADM, True, Projection("look", False, False)),
        ("<think>a</think><action>look</action>< action >", ADM, True, Projection("look", False, False)),
        # ... but "< /think>" (space between "<" and "/") is no closing tag in the released counter (issue #14)
        ("<think>a < /think> b</think><action>look</action>", ADM, True, Projection("look", True, True)),
        ("<think>a< /think ></think><action>look</action>", ADM, True, Projection("look", True, True)),
        ("<think>a</think><action>look</action>< /action>", ADM, True, Projection("look", False, False)),
        # fallback 2 extracts with the released "<\s*action\s*>(.*?)</\s*action\s*>" (issue #14), not the
        # 30-character tail
        ("<think>a</think>< action >go to cabinet 1</action>", ADM, True,
         Projection("go to cabinet 1", False, False)),
        ("<think>a</think><action>help</ action >", ADM, True, Projection("help", False, False)),
        ("<think>a</think>< ACTION\n>Look</  Action >", ADM, True, Projection("look", False, False)),
        ("<think>a</think>< /action>look</action>", ADM, True,
         Projection("<think>a</think>< /action>look</action>"[-30:], False, False)),
        # CJK ideographs fail the strict pass
        ("<think>想</think><action>look</action>", ADM, True, Projection("look", False, False)),
        # text after </action> fails the strict match
        ("<think>a</think><action>look</action> trailing", ADM, True, Projection("look", False, False)),
        # fallback 3: last 30 characters of the original text, case kept
        ("I Think We Should Click The Blue Button Now!", None, False,
         Projection("ould Click The Blue Button Now!"[-30:], False, False)),
        ("short", None, False, Projection("short", False, False)),
    ],
)
def test_think_action_cases(text, admissible, check, expected):
    assert project_think_action(text, admissible, check_admissible=check) == expected


def test_fallback_is_exactly_last_30_chars():
    text = "x" * 10 + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
    assert project_think_action(text, None, check_admissible=False).action == "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"


@pytest.mark.parametrize(
    ("text", "action", "valid"),
    [
        ("<think>hm</think><search> capital of x </search>", "<search>capital of x</search>", True),
        ("<answer> Paris </answer>", "<answer>Paris</answer>", True),  # <think> not required
        ("<SEARCH>Q</SEARCH>", "<search>Q</search>", True),  # extraction is case-insensitive
        ("no tags at all", "", False),
        ("<search>a</search><search>b</search>", "<search>a</search>", False),  # more than one search
        ("<answer>a</answer> then <answer>b</answer>", "<answer>a</answer>", False),
        # errata 11: case-sensitive cut, case-insensitive extraction
        ("<answer>x</answer><search>q</SEARCH>", "<answer>x</answer>", False),
        ("<answer>x</answer><search>q</search>", "<search>q</search>", False),
        # cut after the first </search>: a later answer is not seen, and no answer tag -> valid
        ("<search>q</search> trailing </answer>", "<search>q</search>", True),
        ("<search>unclosed <answer>y</answer>", "<answer>y</answer>", False),
    ],
)
def test_search_cases(text, action, valid):
    proj = project_search(text)
    assert (proj.action, proj.valid, proj.format_valid) == (action, valid, valid)


_PIECES = [*"ab <>/", "<search>", "</search>", "<answer>", "</answer>", "<SEARCH>", "</ANSWER>", "<think>",
           "</think>", "<action>", "</action>"]
_TAGGY = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _TAGGY), st.one_of(st.none(), st.lists(st.text(max_size=20), max_size=5)), st.booleans())
def test_think_action_never_crashes(text, admissible, check):
    proj = project_think_action(text, admissible, check_admissible=check)
    assert isinstance(proj.action, str)
    assert proj.valid <= proj.format_valid or not check  # valid implies format-valid
    if proj.format_valid:
        assert proj.action == proj.action.strip().lower()
    else:
        assert not proj.valid




@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), _TAGGY))
def test_search_never_crashes(text):
    proj = project_search(text)
    assert proj.action == "" or proj.action.startswith(("<search>", "<answer>"))
    assert proj.valid == proj.format_valid
    if proj.action == "":
        assert not proj.valid
