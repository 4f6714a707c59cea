"""This machine's fp32 matmul GFLOP/s, and the fraction one training step of the tiny model achieves.

Step FLOPs are estimated as 6 · params · tokens (forward + backward of every token of the update) and the
step is timed on the update alone (rollout excluded), with the same thread count as the matmul.

Usage: python bench/matmul_peak.py [--threads 1] [--size 1024] [--reps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import machine, median, table, write


def matmul_gflops(n: int, reps: int) -> list[float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: first call pays allocation and kernel selection
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        out.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return out


def make_train_step(batch: int, seq: int) -> tuple[object, int]:
    """Forward+backward+AdamW on the tiny model (as the trainer builds it) over ``batch × seq`` tokens."""
    from t2po_cli.config.compose import compose_config
    from t2po_cli.trainer.models import load_policy

    cfg = compose_config(["trainer=ci", "tracking.mlflow=false"]).config
    policy = load_policy(cfg.model, device="cpu")
    model = policy.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))

    def step() -> None:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    return step, n_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak: list[float] = []
    step: list[float] = []
    train_step, n_params = make_train_step(args.batch, args.seq)
    for _ in range(args.reps):  # alternate: one matmul sample, one step sample
        peak += matmul_gflops(args.size, 1)
        t0 = time.perf_counter()
        train_step()  # type: ignore[operator]
        step.append(6 * n_params * args.batch * args.seq / (time.perf_counter() - t0) / 1e9)
    rows = [
        {"what": f"fp32 matmul {args.size}^3", "GFLOP/s": median(peak)},
        {"what": f"tiny train step ({n_params} params, {args.batch}x{args.seq} tokens)", "GFLOP/s": median(step)},
        {"what": "fraction of matmul peak", "GFLOP/s": median(step) / median(peak)},
    ]
    print(table(rows, ["what", "GFLOP/s"]))
    print(write("matmul_peak", {"rows": rows, "matmul_gflops": peak, "step_gflops": step, "params": n_params,
                                "threads": args.threads, "machine": machine()}))


if __name__ == "__main__":
    main()
