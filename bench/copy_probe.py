"""Can a locally built model learn to copy? The bare skill WebShop's `click[<asin>]` needs (issue #4).

Each example lists ten random ``'click[b0xxxxxxxx]'`` lines (~150 tokens, the shape of the WebShop results
page's admissible actions) and the target is the first ASIN plus ``]``. The model is trained from its random
init (AdamW, one-cycle, batch 32) and evaluated on held-out lists: NLL per target token (uniform over the 36
characters is 3.58 nats) and the probability of an exact copy. A model that cannot learn this in a CPU budget
cannot learn WebShop from demonstrations either.

Usage: python bench/copy_probe.py [--layers 2] [--hidden 128] [--ffn 384] [--steps 1500]
"""

from __future__ import annotations

import argparse
import random
import string
import time

import torch
from _common import machine, table, write


def _examples(tok, rng: random.Random, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [n, T], labels [n, T])`` with labels -100 outside the copied ASIN."""
    chars = string.ascii_lowercase + string.digits
    rows = []
    for _ in range(n):
        items = ["b0" + "".join(rng.choice(chars) for _ in range(8)) for _ in range(10)]
        prompt = "[\n'click[back to search]',\n'click[next >]',\n" + "".join(f"'click[{a}]',\n" for a in items)
        p = tok(prompt + "].\n<action>click[", add_special_tokens=False)["input_ids"]
        r = tok(items[0] + "]", add_special_tokens=False)["input_ids"]
        rows.append((p, r))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((n, width), tok.pad_token_id or 0, dtype=torch.long)
    labels = torch.full((n, width), -100, dtype=torch.long)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
    return ids, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=384)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from t2po_cli.config.schema import ModelConfig
    from t2po_cli.trainer.models import load_tokenizer
    from t2po_cli.trainer.offline_models import tiny_dir

    folder = tiny_dir(ModelConfig(hidden_size=args.hidden, num_layers=args.layers, intermediate_size=args.ffn))
    tok = load_tokenizer(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(args.steps, 2), pct_start=0.1)
    rng = random.Random(0)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(args.steps):
        ids, labels = _examples(tok, rng, 32)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if step % 100 == 0:
            print(f"step {step}: loss {losses[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    train_s = time.perf_counter() - t0
    model.eval()
    ids, labels = _examples(tok, random.Random(1), 64)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
    target, mask = labels[:, 1:], labels[:, 1:] != -100
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    result = {
        "model": {"layers": args.layers, "hidden": args.hidden, "ffn": args.ffn,
                  "params": sum(p.numel() for p in model.parameters())},
        "steps": args.steps, "lr": args.lr, "batch": 32, "train_s": train_s,
        "loss_first": losses[0], "loss_last_100_mean": sum(losses[-100:]) / len(losses[-100:]),
        "heldout_nll_per_token": float(nll.sum() / mask.sum()),
        "uniform_char_nll": float(torch.log(torch.tensor(36.0))),
        "heldout_exact_copy_prob": float(torch.exp(-nll.sum(1)).mean()),
        "machine": machine(),
    }
    cols = ["layers", "hidden", "params", "steps", "train_s", "loss_first", "loss_last_100_mean",
            "heldout_nll_per_token", "uniform_char_nll", "heldout_exact_copy_prob"]
    print(table([result["model"] | result], cols))
    print(write(f"copy_probe_l{args.layers}_h{args.hidden}", result))


if __name__ == "__main__":
    main()
