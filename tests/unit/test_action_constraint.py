"""Admissible-action decoding: the prefix rule by hand, then the engine with a real (tiny) tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny_policy import peaked_tiny_policy

from t2po_cli.config.schema import ModelConfig
from t2po_cli.rollout.constraint import ActionSpace, allowed_continuations, instruction_words
from t2po_cli.rollout.engine import HFEngine, build_chat_prompt
from t2po_cli.rollout.streams import seeded_streams
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.trainer.models import Policy
from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir

ACTIONS = ["click[back to search]", "click[b0x7k2m9qa]", "click[b0x7k2zz01]", "click[buy now]"]


# ------------------------------------------------------------------------------------------ the prefix rule


def test_empty_prefix_allows_every_action_start():
    got = allowed_continuations("", ["click[buy now]", "search[<your query>]"])
    assert got == ["click[buy now]</action>", "search["]


def test_prefix_narrows_to_matching_actions():
    assert allowed_continuations("click[b0x7k2", ACTIONS) == ["m9qa]</action>", "zz01]</action>"]
    assert allowed_continuations("click[bu", ACTIONS) == ["y now]</action>"]


def test_complete_action_only_allows_the_close_tag():
    assert allowed_continuations("click[buy now]", ACTIONS) == ["</action>"]
    assert allowed_continuations("click[buy now]</act", ACTIONS) == ["ion>"]


def test_placeholder_is_free_text_then_close():
    acts = ["search[<your query>]", "click[buy now]"]
    assert allowed_continuations("search[red shoes", acts) is None  # free text: nothing masked
    assert allowed_continuations("search[red shoes]", acts) == ["</action>"]
    assert allowed_continuations("sea", acts) == ["rch["]


def test_placeholder_restricted_to_instruction_words():
    acts = ["search[<your query>]", "click[buy now]"]
    words = instruction_words("Find me low carb and non-gmo green tea, with size: pack of 6.")
    assert words == ["find", "me", "low", "carb", "and", "non-gmo", "green", "tea", "with", "size", "pack",
                     "of", "6"]
    got = allowed_continuations("search[gr", acts, words=["green", "tea"])
    assert got == ["een]</action>", "een green", "een tea"]
    assert allowed_continuations("search[", acts, words=["tea"]) == ["tea]</action>", "tea tea"]
    assert allowed_continuations("search[tea]", acts, words=["tea"]) == ["</action>"]
    assert allowed_continuations("search[coffee", acts, words=["tea"]) is None  # strayed: unconstrained


def test_strayed_prefix_is_unconstrained():
    assert allowed_continuations("clack[", ACTIONS) is None
    assert allowed_continuations("", []) is None


# ------------------------------------------------------------------------------------------ in the engine


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Policy:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder: Path = tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600))
    return peaked_tiny_policy(folder, seed=3)


def _prompts(policy: Policy, n: int) -> list[list[int]]:
    """Chat prompts whose generation prefix already opened ``<action>`` (the constraint is live at step 0)."""
    base = build_chat_prompt(policy.tokenizer, "buy the item b0x7k2m9qa")
    opener = policy.tokenizer.encode("<think>ok</think>\n<action>", add_special_tokens=False)
    return [base + opener for _ in range(n)]


def _generate(policy: Policy, admissible, n: int = 12, seed: int = 0, temperature: float = 1.0):
    engine = HFEngine(policy)
    params = SamplingParams(max_new_tokens=24, temperature=temperature)
    return engine.generate(_prompts(policy, n), params, streams=seeded_streams(seed, n),
                           admissible=admissible)


def _spelled_admissibly(text: str) -> bool:
    return any(text.startswith(a + "</action>") for a in ACTIONS)


def test_constrained_rows_always_spell_an_admissible_action(policy):
    free = _generate(policy, None)
    assert not all(_spelled_admissibly(t) for t in free.texts)  # the random model alone does not
    constrained = _generate(policy, [ACTIONS] * 12)
    assert all(_spelled_admissibly(t) for t in constrained.texts), constrained.texts
    flat = _generate(policy, [ACTIONS] * 12, temperature=5.0)  # a flatter policy: the choice stays the policy's
    assert all(_spelled_admissibly(t) for t in flat.texts), flat.texts
    assert len({t.split("</action>")[0] for t in flat.texts}) >= 2


def test_constrained_search_uses_only_the_given_words(policy):
    space = ActionSpace(("search[<your query>]",), query_words=("green", "tea", "pack"))
    gen = _generate(policy, [space] * 8, n=8, temperature=3.0)
    allowed = {"green", "tea", "pack"}
    for text in gen.texts:
        assert text.startswith("search["), text
        closed = "]</action>" in text
        *whole, last = text[len("search["): text.index("]</action>") if closed else None].split(" ")
        assert set(whole) <= allowed, text
        assert last in allowed if closed else any(w.startswith(last) for w in allowed), text  # cut by length


def test_constrained_logps_are_the_unmasked_policy_logps(policy):
    gen = _generate(policy, [ACTIONS] * 4, n=4)
    for prompt, response, logps in zip(gen.prompt_ids, gen.response_ids, gen.logps, strict=True):
        ids = torch.tensor([prompt + response.tolist()])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0].float()
        raw = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(response)], dim=-1)
        expected = raw.gather(-1, response[:, None]).squeeze(-1)
        torch.testing.assert_close(logps, expected, atol=2e-5, rtol=0)


def test_rows_without_a_list_are_bit_identical_to_no_constraint(policy):
    free = _generate(policy, None, n=4)
    mixed = _generate(policy, [None, None, None, None], n=4)
    assert [r.tolist() for r in free.response_ids] == [r.tolist() for r in mixed.response_ids]
    one = _generate(policy, [ACTIONS, None, None, None], n=4)
    assert _spelled_admissibly(one.texts[0])
    assert [r.tolist() for r in one.response_ids[1:]] == [r.tolist() for r in free.response_ids[1:]]
