"""Checkpoints: trainable weights, optimizer, RNG states, step and data cursor, written atomically.

Layout: ``<run>/checkpoints/step_<N>/`` with ``trainable.pt`` (the parameters that require grad, plus a
value head if any), ``optimizer.pt``, ``rng.pt`` and ``state.json``. A checkpoint is written to a temporary
folder and renamed, so a process killed mid-save leaves the previous checkpoint intact. The two newest
are kept.

On CPU with the same seed, resuming from step N reproduces an uninterrupted run exactly: the rollout RNG is
derived from (seed, step), so it needs no state, and everything else that changes is saved here.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from t2po_cli.errors import RunFolderError

KEEP = 2


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint on disk."""

    path: Path
    step: int


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under ``root``, oldest first (incomplete temp folders are ignored)."""
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_") and (p / "state.json").is_file():
            try:
                out.append(CheckpointInfo(p, int(p.name.removeprefix("step_"))))
            except ValueError:
                continue
    return sorted(out, key=lambda c: c.step)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad (LoRA adapters, or every weight under full fine-tuning)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path,
    step: int,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    extra: dict[str, Any] | None = None,
    keep: int = KEEP,
) -> CheckpointInfo:
    """Atomically save a checkpoint for ``step`` and prune all but the newest ``keep``.

    Args:
        root: the run's ``checkpoints/`` folder.
        step: completed update steps.
        modules: name → module whose trainable parameters are saved (e.g. ``policy``, ``value_head``).
        optimizers: name → optimizer.
        extra: JSON-serialisable state (data cursor, counters).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({name: trainable_state(m) for name, m in modules.items()}, tmp / "trainable.pt")
    torch.save({name: o.state_dict() for name, o in optimizers.items()}, tmp / "optimizer.pt")
    torch.save(
        {"python": random.getstate(), "torch": torch.get_rng_state()},
        tmp / "rng.pt",
    )
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _prune(root, keep)
    return CheckpointInfo(final, step)


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` (at least 1) checkpoints under ``root``."""
    for old in list_checkpoints(root)[:-max(1, keep)]:
        shutil.rmtree(old.path, ignore_errors=True)


def read_checkpoint(ckpt: CheckpointInfo) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Read a checkpoint's files (weights, optimizer states, RNG states, state.json) without applying them.

    ``t2po train --resume`` calls this before building the model, so a corrupt checkpoint fails with one
    line before any model-loading output.

    Raises:
        RunFolderError: a file is missing or unreadable (corrupt checkpoint), with the fix.
    """
    if (ckpt.path / "dcp").is_dir():
        return _read_distributed(ckpt)
    try:
        weights = torch.load(ckpt.path / "trainable.pt", map_location="cpu", weights_only=True)
        opt_states = torch.load(ckpt.path / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(ckpt.path / "rng.pt", map_location="cpu", weights_only=False)
        state = json.loads((ckpt.path / "state.json").read_text())
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as e:
        raise RunFolderError(
            f"checkpoint {ckpt.path} is corrupt ({type(e).__name__}); delete that folder to resume from the "
            "previous checkpoint"
        ) from None
    return weights, opt_states, rng, state


def _read_distributed(ckpt: CheckpointInfo) -> tuple[Any, Any, Any, dict[str, Any]]:
    """A sharded checkpoint's metadata and state.json (the shards themselves load collectively)."""
    try:
        state = json.loads((ckpt.path / "state.json").read_text())
        if not (ckpt.path / "dcp" / ".metadata").is_file():
            raise FileNotFoundError("dcp/.metadata")
    except (OSError, ValueError) as e:
        raise RunFolderError(
            f"checkpoint {ckpt.path} is corrupt ({type(e).__name__}); delete that folder to resume from the "
            "previous checkpoint"
        ) from None
    return None, None, None, state


def load_checkpoint(
    ckpt: CheckpointInfo,
    *,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Restore a checkpoint in place. Returns its ``state.json`` dict.

    Raises:
        RunFolderError: a file is missing or unreadable (corrupt checkpoint), with the fix.
    """
    weights, opt_states, rng, state = read_checkpoint(ckpt)
    for name, module in modules.items():
        if name not in weights:
            raise RunFolderError(f"checkpoint {ckpt.path} has no weights for '{name}'; it belongs to another run")
        params = dict(module.named_parameters())
        missing = set(weights[name]) - set(params)
        if missing:
            raise RunFolderError(
                f"checkpoint {ckpt.path} does not match the model ({len(missing)} unknown tensors); "
                "it belongs to another model recipe"
            )
        with torch.no_grad():
            for n, t in weights[name].items():
                params[n].copy_(t)
    for name, opt in optimizers.items():
        opt.load_state_dict(_regroup(opt_states[name], opt))
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    return state


def _regroup(saved: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Fit a checkpoint saved with one param group to an optimizer with several (same parameters, same order).

    Checkpoints written before ``algo.ppo.value_lr`` took effect hold the value head in the policy's group;
    the per-parameter moments are kept and each group takes its current settings (learning rates).
    """
    groups = saved["param_groups"]
    if len(groups) == len(opt.param_groups) or len(groups) != 1:
        return saved
    indices = list(groups[0]["params"])
    if len(indices) != sum(len(g["params"]) for g in opt.param_groups):
        return saved  # let torch report the mismatch
    new_groups, at = [], 0
    for g in opt.param_groups:
        n = len(g["params"])
        new_groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": indices[at:at + n]})
        at += n
    return {"state": saved["state"], "param_groups": new_groups}


# ------------------------------------------------------------------------------------------ distributed

DCP_DIR = "dcp"
"""Sub-folder of ``step_<N>/`` holding the ``torch.distributed.checkpoint`` shards (ddp/fsdp runs)."""


def _dcp_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, value_head: torch.nn.Module | None
               ) -> dict[str, Any]:
    """The state DCP saves and loads in place: trainable weights, optimizer (keyed by parameter name, so
    independent of the world size and of DDP's ``module.`` prefix) and the value head."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from t2po_cli.trainer.distributed import trainable_names

    msd, osd = get_state_dict(model, optimizer)
    keep = set(trainable_names(model))
    state: dict[str, Any] = {"model": {k: v for k, v in msd.items() if k in keep}, "optim": osd}
    if value_head is not None:
        state["value_head"] = value_head.state_dict()
    return state


def save_distributed(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    value_head: torch.nn.Module | None,
    *,
    world: Any,
    extra: dict[str, Any],
    keep: int = KEEP,
) -> CheckpointInfo:
    """Collectively save a sharded checkpoint for ``step`` (every rank calls this) and prune all but the newest
    ``keep``.

    Layout: ``step_<N>/dcp/`` (``torch.distributed.checkpoint``: model, optimizer and value head, each rank
    writing its shards), ``rng_rank<r>.pt`` per rank, ``state.json`` (step, data cursor, counters, world
    size). Written into a temporary folder that rank 0 renames once every rank is done, as for one process.
    """
    import torch.distributed.checkpoint as dcp

    from t2po_cli.trainer.distributed import barrier

    final, tmp = root / f"step_{step}", root / f".step_{step}.tmp"
    if world.is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(world)
    dcp.save(_dcp_state(model, optimizer, value_head), checkpoint_id=str(tmp / DCP_DIR))
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, tmp / f"rng_rank{world.rank}.pt")
    barrier(world)
    if world.is_main:
        state = {"step": step, "world_size": world.world_size, "strategy": world.strategy, **extra}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep)
    barrier(world)
    return CheckpointInfo(final, step)


def load_distributed(
    ckpt: CheckpointInfo,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    value_head: torch.nn.Module | None,
    rank: int,
) -> dict[str, Any]:
    """Collectively restore a sharded checkpoint in place, whatever world size wrote it. Returns state.json.

    Each rank restores its own RNG state when the saving run had that rank; a rank the saving run did not
    have keeps the state seeded from (seed, rank) (the rollouts draw from (seed, step) generators anyway).

    Raises:
        RunFolderError: a single-process checkpoint (the run's strategy changed), or a corrupt one.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    if not (ckpt.path / DCP_DIR).is_dir():
        raise RunFolderError(
            f"checkpoint {ckpt.path} was written by one process without trainer.distributed; resume it "
            "without --nproc, or start a new run"
        )
    state = _dcp_state(model, optimizer, value_head)
    try:
        dcp.load(state, checkpoint_id=str(ckpt.path / DCP_DIR))
        info = json.loads((ckpt.path / "state.json").read_text())
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise RunFolderError(
            f"checkpoint {ckpt.path} is corrupt ({type(e).__name__}); delete that folder to resume from the "
            "previous checkpoint"
        ) from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=StateDictOptions(strict=False))
    if value_head is not None:
        value_head.load_state_dict(state["value_head"])
    rng_path = ckpt.path / f"rng_rank{rank}.pt"
    if rng_path.is_file():
        rng = torch.load(rng_path, map_location="cpu", weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
    return info


def load_weights(ckpt: CheckpointInfo, modules: dict[str, torch.nn.Module]) -> None:
    """Restore only the trained weights (evaluation) into plain modules, from either checkpoint format.

    ``modules`` maps ``policy`` (and ``value_head``) to unwrapped modules; a sharded checkpoint is read by
    ``torch.distributed.checkpoint`` without a process group.

    Raises:
        RunFolderError: a corrupt checkpoint.
    """
    if not (ckpt.path / DCP_DIR).is_dir():
        load_checkpoint(ckpt, modules=modules, optimizers={})
        return
    import warnings

    import torch.distributed.checkpoint as dcp

    policy = modules["policy"]
    state: dict[str, Any] = {"model": {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}}
    if "value_head" in modules:
        state["value_head"] = modules["value_head"].state_dict()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no process group": reading in one process is what we want
            dcp.load(state, checkpoint_id=str(ckpt.path / DCP_DIR))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise RunFolderError(
            f"checkpoint {ckpt.path} is corrupt ({type(e).__name__}); delete that folder to evaluate the "
            "previous checkpoint"
        ) from None
    params = dict(policy.named_parameters())
    with torch.no_grad():
        for n, t in state["model"].items():
            params[n].copy_(t)
    if "value_head" in modules:
        modules["value_head"].load_state_dict(state["value_head"])
