"""End-to-end training on the tiny model: LoRA trains while the base stays frozen, resume reproduces an
uninterrupted run, T2PO off is exactly the baseline, and every algorithm runs on every env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from t2po_cli.cli.app import main
from t2po_cli.trainer import loop

from .conftest import make_run, stable_rows, train_until_checkpoint

pytestmark = pytest.mark.slow


def test_lora_params_change_and_base_stays_frozen(e2e_root: Path) -> None:
    run = make_run(e2e_root, ["env=searchqa", "model=tiny-lora", "trainer.lr=1e-2", "trainer.steps=1"])
    s = loop.build_session(run.path)
    before = {n: p.detach().clone() for n, p in s.policy.model.named_parameters()}
    trainable = {n for n, p in s.policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    metrics = loop.train_step(s, 1)
    assert metrics["actor/skipped_steps"] == 0
    after = dict(s.policy.model.named_parameters())
    changed = {n for n in trainable if not torch.equal(before[n], after[n])}
    assert changed, "no LoRA parameter moved after one optimiser step"
    frozen = [n for n in before if n not in trainable]
    assert frozen and all(torch.equal(before[n], after[n].detach()) for n in frozen)


def test_resume_equals_uninterrupted_run(e2e_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["env=webshop", "trainer.steps=3", "trainer.save_every=1", "trainer.val_every=1", "trainer.seed=3"]
    full = make_run(e2e_root, overrides, name="full")
    loop.train_run(full.path)

    broken = make_run(e2e_root, overrides, name="broken")
    train_until_checkpoint(broken, 2, monkeypatch)  # the process "dies" right after the step-2 checkpoint
    assert json.loads((broken.path / "status.json").read_text())["state"] == "failed"
    loop.train_run(broken.path)

    a, b = stable_rows(full), stable_rows(broken)
    assert [(s, sp) for s, sp, _ in b] == [(0, "val"), (1, "train"), (1, "val"), (2, "train"), (2, "val"),
                                          (3, "train"), (3, "val")]
    assert a == b


def test_t2po_off_is_bit_identical_to_inert_hooks(e2e_root: Path) -> None:
    # Baseline: no hooks at all. Inert: T2PO hooks installed (scores computed every token, TDS consulted every
    # turn) but unable to act. Rollouts, advantages and updates must match exactly.
    base = ["env=alfworld", "trainer.steps=2", "trainer.seed=1", "env.max_turns=6"]
    off = make_run(e2e_root, [*base, "t2po=off"], name="off")
    inert = make_run(
        e2e_root,
        [*base, "t2po=on", "t2po.tti.patience=null", "env.max_think_tokens=null", "t2po.tds.eta=1e-30"],
        name="inert",
    )
    loop.train_run(off.path)
    loop.train_run(inert.path)

    def strip(rows):
        return [(s, sp, {k: v for k, v in m.items() if not k.startswith("t2po/") and not k.startswith("val/t2po/")})
                for s, sp, m in rows]

    assert strip(stable_rows(off)) == strip(stable_rows(inert))
    inert_metrics = [m for _, sp, m in stable_rows(inert) if sp == "train"]
    assert all(m["t2po/tds/resample_rate"] == 0.0 for m in inert_metrics if "t2po/tds/resample_rate" in m)


def test_t2po_on_alfworld_intervenes_and_resamples(e2e_root: Path) -> None:
    """`t2po train --env alfworld --t2po on` logs non-zero TTI and TDS metrics through the whole train path.

    The CI warm start (20 SFT steps) leaves M_t moving by more than the CPU recipe's ε = 1e-2 per token, so
    the stagnation tolerance is widened here (τ = 0.5: with τ = 0.1 one step of seed 0 intervened on 0 to 1 of
    24 turns, depending on the sampled tokens); the default recipe's numbers are measured in issue #5's note.
    """
    from t2po_cli.tracking import keys as K

    run = make_run(e2e_root, ["env=alfworld", "t2po=on", "trainer.steps=1", "trainer.val_every=0",
                              "env.max_turns=6", "t2po.tti.tau=0.5"])
    loop.train_run(run.path)
    m = stable_rows(run)[0][2]
    assert m[K.TTI_INTERVENTIONS_PER_TURN] > 0, {k: v for k, v in m.items() if k.startswith("t2po")}
    assert m[K.TDS_RESAMPLE_RATE] > 0, m


@pytest.mark.parametrize("env", ["webshop", "alfworld", "searchqa"])
@pytest.mark.parametrize("algo", ["grpo", "gigpo", "ppo"])
def test_every_algorithm_runs_on_every_env(e2e_root: Path, env: str, algo: str) -> None:
    run = make_run(e2e_root, [f"env={env}", f"algo={algo}", "trainer.steps=1", "env.max_turns=4",
                              "trainer.val_every=0"])
    summary = loop.train_run(run.path)
    rows = stable_rows(run)
    assert summary["steps"] == 1 and [(s, sp) for s, sp, _ in rows] == [(1, "train")]
    m = rows[0][2]
    assert m["actor/skipped_steps"] == 0 and torch.isfinite(torch.tensor(m["actor/grad_norm"]))
    if algo == "ppo":
        assert "critic/value_loss" in m


def test_a2tgpo_logs_information_gain(e2e_root: Path) -> None:
    run = make_run(e2e_root, ["env=searchqa", "algo=a2tgpo", "t2po=off", "trainer.steps=1", "trainer.val_every=0"])
    loop.train_run(run.path)
    m = stable_rows(run)[0][2]
    assert any(k.startswith("a2tgpo/") for k in m), sorted(m)


def test_cli_train_then_eval(e2e_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--env", "searchqa", "--json", "trainer=ci", "tracking.mlflow=false", f"runs_root={e2e_root}"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    run_dir = Path(result["run_dir"])
    for f in ("resolved_config.yaml", "overrides.txt", "command.txt", "git.json", "metrics.jsonl", "status.json"):
        assert (run_dir / f).is_file(), f
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert (run_dir / "checkpoints" / "step_2" / "trainable.pt").is_file()
    assert main(["eval", "--run", str(run_dir), "--episodes", "4", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["episodes"] == 4 and ev["checkpoint_step"] == 2 and 0.0 <= ev["success_rate"] <= 1.0
    assert ev["tti"] is True and "tti_interventions_per_turn" in ev  # the default run has T2PO on
    # --tti off evaluates the same checkpoint without the intervention (the run's config stays as it was).
    config_before = (run_dir / "resolved_config.yaml").read_text()
    assert main(["eval", "--run", str(run_dir), "--episodes", "4", "--json", "--tti", "off"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["tti"] is False and "tti_interventions_per_turn" not in off
    assert (run_dir / "resolved_config.yaml").read_text() == config_before
    # resuming a finished run is a user error, not a retrain
    assert main(["train", "--resume", str(run_dir)]) == 2


def test_ppo_value_head_trains_at_value_lr(e2e_root: Path) -> None:
    # algo.ppo.value_lr is the value head's own learning rate (it was accepted and ignored before); the
    # warm-up and rollback scale both groups alike.
    run = make_run(e2e_root, ["env=searchqa", "algo=ppo", "trainer.lr=1e-4", "algo.ppo.value_lr=3e-2",
                              "trainer.steps=1"])
    s = loop.build_session(run.path)
    groups = s.ctx.optimizer.param_groups
    assert len(groups) == 2
    head = {id(p) for p in s.policy.value_head.parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    assert not head & {id(p) for p in groups[0]["params"]}
    loop._set_lr(s, 1)
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == pytest.approx(3e-2)
    s.watch.lr_scale = 0.5
    loop._set_lr(s, 1)
    assert groups[0]["lr"] == pytest.approx(5e-5) and groups[1]["lr"] == pytest.approx(1.5e-2)
