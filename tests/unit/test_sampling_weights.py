"""The engine's merged-LoRA sampling copy and its shared-prompt / shared-prefix prefill, against plain decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.rollout.engine import MIN_SHARED_PREFIX, HFEngine, _common_prefix_len, build_chat_prompt
from t2po_cli.rollout.streams import episode_streams, seeded_streams
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.trainer.models import Policy, load_policy
from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir

LORA_CFG = ModelConfig(vocab_size=512, lora=LoraConfig(enabled=True, r=4, alpha=8))


@pytest.fixture()
def policy(tmp_path_factory) -> Policy:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder: Path = tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600))
    pol = load_policy(LORA_CFG, base_path=folder)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # peaked base and non-zero adapters, so the merge has something to get wrong
        for n, p in pol.model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2 if "lora_" not in n else 0.3, generator=gen)
    return pol


def _prompts(policy: Policy) -> list[list[int]]:
    return [build_chat_prompt(policy.tokenizer, q) for q in ("find the mug", "buy a red shirt", "go north now")]


def _unmerged_logits(policy: Policy, prompt: list[int], response: torch.Tensor) -> torch.Tensor:
    ids = torch.tensor([prompt + response.tolist()])
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0].float()
    return logits[len(prompt) - 1: len(prompt) - 1 + len(response)]


def _assert_follows_unmerged(policy: Policy, gen) -> None:
    for prompt, response, logps in zip(gen.prompt_ids, gen.response_ids, gen.logps, strict=True):
        ref = torch.log_softmax(_unmerged_logits(policy, prompt, response), -1)
        assert response.tolist() == ref.argmax(-1).tolist()  # greedy: the unmerged model's choices
        # Merged W + BA vs W x + B(A x): float rounding only (these random weights give logits of ~±30).
        torch.testing.assert_close(logps, ref.gather(-1, response[:, None]).squeeze(-1), atol=1e-4, rtol=1e-4)


def test_merged_copy_decodes_like_the_adapters_and_follows_their_updates(policy):
    engine = HFEngine(policy)
    prompts = _prompts(policy)
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    before = engine.generate(prompts, greedy, streams=seeded_streams(0, 3))
    assert engine.decoding_model() is not policy.model  # decoding ran on the merged copy
    _assert_follows_unmerged(policy, before)
    step = torch.Generator().manual_seed(1)
    with torch.no_grad():  # an optimiser step on the adapters (in place, as AdamW does)
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(torch.randn(p.shape, generator=step) * 0.5)
    after = engine.generate(prompts, greedy, streams=seeded_streams(0, 3))
    assert [r.tolist() for r in after.response_ids] != [r.tolist() for r in before.response_ids]
    _assert_follows_unmerged(policy, after)


def test_shared_prompt_prefill_equals_separate_prefills(policy):
    """Identical prompts (a task's G copies) are prefilled once; each row still samples from its own stream."""
    engine = HFEngine(policy)
    prompt = _prompts(policy)[1]
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    shared = engine.generate([prompt] * 4, params, streams=seeded_streams(5, 4))
    assert len({tuple(r.tolist()) for r in shared.response_ids}) > 1  # copies differ: one stream each
    for i, g in enumerate(seeded_streams(5, 4)):
        alone = engine.generate([prompt], params, streams=[g])
        assert alone.response_ids[0].tolist() == shared.response_ids[i].tolist()
        torch.testing.assert_close(alone.logps[0], shared.logps[i], atol=1e-5, rtol=1e-5)  # B=4 vs B=1 matmuls


def test_common_prefix_len_by_hand():
    assert _common_prefix_len([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert _common_prefix_len([[1, 2], [1, 2, 3]]) == 2
    assert _common_prefix_len([[7], [1]]) == 0


def test_shared_prefix_prefill_equals_separate_prefills(policy):
    """Distinct prompts with a long common head: the head runs once, the suffixes after it; every row gets the
    tokens and log-probs it gets when prefilled alone."""
    head = "You are a shopping agent. Read the page, think briefly, then act. The instruction is: "
    prompts = [build_chat_prompt(policy.tokenizer, head + q) for q in ("a red shirt", "green tea, pack of 6", "go")]
    assert _common_prefix_len(prompts) >= MIN_SHARED_PREFIX
    engine = HFEngine(policy)
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    batched = engine.generate(prompts, params, streams=episode_streams(2, 1, "train", range(3)))
    for e, prompt in enumerate(prompts):
        alone = engine.generate([prompt], params, streams=episode_streams(2, 1, "train", [e]))
        assert alone.response_ids[0].tolist() == batched.response_ids[e].tolist()
        torch.testing.assert_close(alone.logps[0], batched.logps[e], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone.signals[0], batched.signals[e], atol=1e-5, rtol=1e-5)


def test_merged_copy_shares_the_unadapted_tensors(policy):
    merged = HFEngine(policy).decoding_model()
    source_embed = policy.model.get_input_embeddings().weight
    assert merged.get_input_embeddings().weight.data_ptr() == source_embed.data_ptr()  # shared, not copied
    q_merged = merged.get_submodule("model.layers.0.self_attn.q_proj").weight
    q_base = policy.model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj").base_layer.weight
    assert q_merged.data_ptr() != q_base.data_ptr()  # adapted: its own merged matrix
    assert all(not p.requires_grad for p in merged.parameters())
    assert any(p.requires_grad for p in policy.model.parameters())  # the trainable adapters are untouched
