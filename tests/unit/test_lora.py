"""peft LoRA on the tiny model: trainable set, frozen base, reference policy, checkpoints, value head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.errors import UserError
from t2po_cli.trainer.models import Policy, load_policy, load_trainable, save_trainable
from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir

LORA_CFG = ModelConfig(vocab_size=512, lora=LoraConfig(enabled=True, r=4, alpha=8))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("T2PO_CACHE", str(tmp_path_factory.mktemp("cache")))
        return tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600))


def _batch(policy: Policy) -> torch.Tensor:
    text = "<|im_start|>user\nfind the capital<|im_end|>\n<|im_start|>assistant\n<think>paris</think>"
    return torch.tensor([policy.tokenizer.encode(text, add_special_tokens=False)])


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _train_step(policy: Policy, ids: torch.Tensor, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=lr)
    out = policy.model(input_ids=ids, output_hidden_states=policy.value_head is not None)
    loss = torch.nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:])
    if policy.value_head is not None:
        loss = loss + policy.value_head(out.hidden_states[-1]).pow(2).sub(1.0).pow(2).mean()
    loss.backward()
    opt.step()


def test_only_adapters_train_and_base_is_untouched(tiny_folder):
    policy = load_policy(LORA_CFG, base_path=tiny_folder)
    named = dict(policy.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * 7 * 2  # A and B × 7 target modules × 2 layers
    before = {n: p.detach().clone() for n, p in named.items()}
    _train_step(policy, _batch(policy))
    for n, p in named.items():
        if n in trainable and "lora_B" in n:
            assert not torch.equal(p, before[n]), n  # B starts at zero, so any gradient step moves it
        elif n not in trainable:
            assert torch.equal(p, before[n]), n  # bit-identical frozen base
    assert all(p.dtype == torch.float32 for n, p in named.items() if n in trainable)


def test_disable_adapter_gives_base_logits(tiny_folder):
    policy = load_policy(LORA_CFG, base_path=tiny_folder)
    ids = _batch(policy)
    base = load_policy(ModelConfig(vocab_size=512, lora=LoraConfig(enabled=False)), base_path=tiny_folder)
    _train_step(policy, ids)
    assert not torch.allclose(_logits(policy.model, ids), _logits(base.model, ids))
    with policy.reference() as ref:
        torch.testing.assert_close(_logits(ref, ids), _logits(base.model, ids), atol=0, rtol=0)
    assert not torch.allclose(_logits(policy.model, ids), _logits(base.model, ids))  # adapters back on


def test_adapter_checkpoint_round_trip(tiny_folder, tmp_path):
    cfg = ModelConfig(vocab_size=512, lora=LoraConfig(enabled=True, r=4, alpha=8), value_head=True)
    policy = load_policy(cfg, base_path=tiny_folder)
    ids = _batch(policy)
    _train_step(policy, ids)
    ckpt = save_trainable(policy, tmp_path / "ckpt")
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file() and not (ckpt / "model").exists()
    resumed = load_policy(cfg, checkpoint=ckpt)
    torch.testing.assert_close(_logits(resumed.model, ids), _logits(policy.model, ids), atol=0, rtol=0)
    assert sum(p.requires_grad for p in resumed.model.parameters()) == 2 * 7 * 2
    hidden = torch.randn(1, 3, policy.model.config.hidden_size)
    torch.testing.assert_close(resumed.value_head(hidden), policy.value_head(hidden))
    fresh = load_policy(cfg, base_path=tiny_folder)
    load_trainable(fresh, ckpt)
    torch.testing.assert_close(_logits(fresh.model, ids), _logits(policy.model, ids), atol=0, rtol=0)


def test_full_finetune_checkpoint_and_reference(tiny_folder, tmp_path):
    cfg = ModelConfig(vocab_size=512, lora=LoraConfig(enabled=False))
    policy = load_policy(cfg, base_path=tiny_folder, with_reference=True)
    ids = _batch(policy)
    start = _logits(policy.model, ids)
    _train_step(policy, ids, lr=1e-3)
    with policy.reference() as ref:
        torch.testing.assert_close(_logits(ref, ids), start, atol=0, rtol=0)
    ckpt = save_trainable(policy, tmp_path / "full")
    resumed = load_policy(cfg, checkpoint=ckpt)
    torch.testing.assert_close(_logits(resumed.model, ids), _logits(policy.model, ids), atol=0, rtol=0)
    fresh = load_policy(cfg, base_path=tiny_folder)
    load_trainable(fresh, ckpt)
    torch.testing.assert_close(_logits(fresh.model, ids), _logits(policy.model, ids), atol=0, rtol=0)
    # Warm start with full fine-tuning, then RL with LoRA: the full checkpoint becomes the base.
    lora_on_top = load_policy(LORA_CFG, checkpoint=ckpt)
    torch.testing.assert_close(_logits(lora_on_top.model, ids), _logits(policy.model, ids), atol=0, rtol=0)
    with pytest.raises(UserError, match="lora"):
        load_trainable(lora_on_top, ckpt)


def test_auto_dtype(tiny_folder, monkeypatch):
    from t2po_cli.trainer import models

    cpu = torch.device("cpu")
    monkeypatch.setattr(models, "cpu_supports_bf16", lambda: True)
    assert models.resolve_dtype(ModelConfig(kind="smollm2", dtype="auto"), cpu) == torch.bfloat16
    assert models.resolve_dtype(ModelConfig(kind="tiny", dtype="auto"), cpu) == torch.float32
    full = ModelConfig(kind="smollm2", dtype="auto", lora=LoraConfig(enabled=False))
    assert models.resolve_dtype(full, cpu) == torch.float32
    monkeypatch.setattr(models, "cpu_supports_bf16", lambda: False)
    assert models.resolve_dtype(ModelConfig(kind="smollm2", dtype="auto"), cpu) == torch.float32
    policy = load_policy(ModelConfig(vocab_size=512, dtype="bfloat16", lora=LoraConfig(r=4, alpha=8)),
                         base_path=tiny_folder)
    dtypes = {n: p.dtype for n, p in policy.model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}  # fp32 adapters on a bf16 base
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
