"""Training across processes with PyTorch's own stack: ``torch.distributed``, DDP, FSDP2 ``fully_shard``.

One rank = one process launched by torchrun (``t2po train --nproc N``) or one Slurm task (submitit sets the
rendezvous variables). Each rank rolls out its own share of the step's tasks (whole groups, so group
statistics stay on one rank), computes advantages on them, and takes part in one synchronised update:

    world   = init_world(cfg)                       gloo on CPU, NCCL on CUDA (+ cuda.set_device: thin)
    train   = wrap_model(policy.model, strategy)    ddp: DDP wrapper;  fsdp: fully_shard per decoder layer + root
    tasks   = tasks[shard_range(len(tasks), rank, world_size)]
    loss    = Σ_chunks token_share(chunk) · world_size · loss(chunk)     (see ``chunk_weight``)
    metrics = combine_metrics(gather(local metrics))  → rank 0 writes metrics.jsonl, MLflow, status

Loss normalisation. The PPO token-mean is over the whole global mini-batch: a micro-batch's token-mean loss
is weighted by its share of the mini-batch's tokens counted over every rank (one all-reduce), times the world
size because DDP and FSDP average gradients over ranks. Then N ranks compute the gradient of one process
that saw every row, whatever the micro-batching (see ``chunk_weight``).

Collectives must match across ranks: ranks hold different numbers of rows, so every forward/backward loop is
padded to the largest rank's number of micro-batches with zero-weight dummy chunks (FSDP all-gathers at each
forward; DDP reduces at the one synchronised backward per mini-batch, the others run under ``no_sync``).
Rollouts never run collectives: under FSDP the engine generates with an unsharded replica whose trainable
weights are refreshed from the shards after every update (``sync_replica``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from t2po_cli.config.schema import STRATEGIES
from t2po_cli.tracking import keys as K

if TYPE_CHECKING:
    from t2po_cli.trainer.models import Policy

__all__ = ["SINGLE", "STRATEGIES", "World", "chunk_weight", "combine_metrics", "init_world", "wrap_model"]


@dataclass(frozen=True)
class World:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 writes the run's metrics, status and MLflow).
        world_size: number of ranks.
        local_rank: rank on this node (the CUDA device index on GPUs).
        strategy: ``none`` (no process group), ``ddp`` or ``fsdp``.
        backend: ``gloo`` (CPU), ``nccl`` (CUDA) or ``none``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        """Rank 0: the only writer of metrics.jsonl, MLflow and the status."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """A process group exists (strategy ddp or fsdp, any world size, 1 included)."""
        return self.strategy != "none"


SINGLE = World()
"""The world of a plain single-process run (``strategy=none``)."""


# ------------------------------------------------------------------------------------------ pure helpers


def world_from_env(environ: Mapping[str, str], strategy: str) -> World:
    """Rank, world size and local rank from torchrun's (or submitit's) variables; 1 process without them.

    Args:
        environ: the process environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
        strategy: ``trainer.distributed.strategy``.
    """
    world_size = int(environ.get("WORLD_SIZE", "1"))
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    return World(rank=rank, world_size=world_size, local_rank=local_rank, strategy=strategy)


def derive_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``: the run's seed on rank 0, a stable hash of (seed, rank) elsewhere.

    Model initialisation always uses the run's seed (every rank must build identical weights: FSDP2 does not
    broadcast them); this seed is for what follows (dropout, the global RNG state saved in checkpoints).
    """
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def shard_range(n: int, rank: int, world_size: int) -> range:
    """The contiguous block of ``n`` items (tasks: whole groups) that rank ``rank`` handles.

    Blocks differ in size by at most one, earlier ranks take the extra items; their concatenation in rank
    order is ``range(n)``, so global task (and episode) indices are preserved.
    """
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def chunk_weight(chunk_tokens: int, global_tokens: int, world_size: int) -> float:
    """Weight of a micro-batch's token-mean loss so that N ranks reproduce one process's global token-mean.

    One process minimises Σ_all x / N_tok. Rank r's micro-batch c contributes token_mean_c · n_c / N_tok;
    DDP/FSDP then *average* the ranks' gradients, so each is multiplied by the world size W:
        weight = n_c / N_tok · W,      N_tok = Σ over ranks and micro-batches of n_c (all-reduced).

    Args:
        chunk_tokens: loss tokens n_c in this micro-batch.
        global_tokens: N_tok, loss tokens of the whole mini-batch over every rank.
        world_size: W.
    """
    if global_tokens <= 0:
        return 0.0
    return chunk_tokens / global_tokens * world_size


SUM_KEYS = frozenset({K.GENERATED_TOKENS, K.TOKENS_PER_S, K.TDS_EXTRA_GEN_TOKENS})
"""Totals over ranks (tokens generated, throughput of the whole job)."""
MAX_KEYS = frozenset({K.STEP_TIME, K.ROLLOUT_TIME, K.UPDATE_TIME, K.TDS_TIME, K.RESPONSE_LENGTH_MAX,
                      K.ADVANTAGE_MAX, K.SKIPPED_STEPS, K.GRAD_NORM_NONFINITE, K.A2TGPO_IG_FORWARD_TIME})
"""The slowest rank sets the time; maxima and the (identical) counters."""
MIN_KEYS = frozenset({K.RESPONSE_LENGTH_MIN, K.ADVANTAGE_MIN})
ROW_KEYS = frozenset({K.VALID_ACTION_RATIO, K.RESPONSE_LENGTH_MEAN, K.RESPONSE_CLIP_RATIO})
"""Means over turn rows (weighted by each rank's row count); every other key is a mean over episodes."""


def combine_metrics(per_rank: Sequence[Mapping[str, float]], episodes: Sequence[int], rows: Sequence[int]
                    ) -> dict[str, float]:
    """Reduce the ranks' metrics into the row one process would have logged for the same episodes.

    Means over episodes are weighted by each rank's episode count, row means by its row count; totals are
    summed; times, maxima and minima take the extreme. A key missing on some rank is reduced over the ranks
    that have it (a NaN value counts as missing: a rank with no rows has no response-length mean).

    Args:
        per_rank: metrics of ranks 0…W−1.
        episodes: episodes each rank played.
        rows: turn rows each rank produced.
    """
    out: dict[str, float] = {}
    keys = sorted({k for m in per_rank for k in m})
    for key in keys:
        base = key.removeprefix(K.VAL_PREFIX)
        vals = [(float(m[key]), r) for r, m in enumerate(per_rank) if key in m and m[key] == m[key]]
        if not vals:
            out[key] = float("nan")
        elif base in SUM_KEYS:
            out[key] = sum(v for v, _ in vals)
        elif base in MAX_KEYS:
            out[key] = max(v for v, _ in vals)
        elif base in MIN_KEYS:
            out[key] = min(v for v, _ in vals)
        else:
            weights = rows if base in ROW_KEYS else episodes
            total = sum(weights[r] for _, r in vals)
            out[key] = (sum(v * weights[r] for v, r in vals) / total) if total else sum(v for v, _ in vals) / len(vals)
    return out


# ------------------------------------------------------------------------------------------ process group


def init_world(strategy: str, timeout_s: float, *, device_type: str = "cpu") -> World:
    """Join the process group (or make a one-rank group) for ``strategy``; ``SINGLE`` for ``none``.

    The backend follows the device: gloo on CPU, NCCL on CUDA, where the rank also selects its GPU by local
    rank (the only GPU-specific lines; the CPU path is what the tests run). ``timeout_s`` bounds every
    collective, so a rank that hangs ends the job instead of blocking it forever.

    Raises:
        RuntimeError: the environment names several ranks but the strategy is ``none``.
    """
    import torch.distributed as dist

    w = world_from_env(os.environ, strategy)
    if strategy == "none":
        if w.world_size > 1:
            raise RuntimeError("WORLD_SIZE > 1 but trainer.distributed.strategy=none; set it to ddp or fsdp")
        return SINGLE
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":  # pragma: no cover - GPU glue
        torch.cuda.set_device(w.local_rank)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, rank=w.rank, world_size=w.world_size, timeout=timeout)
        else:
            # One process without a launcher (plain `t2po train`, or `--resume` with one rank): a private
            # one-rank group, so ddp/fsdp code paths and checkpoints are the same as under torchrun.
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return World(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=w.local_rank,
                 strategy=strategy, backend=backend)


def shutdown(world: World) -> None:
    """Leave the process group (no-op for ``SINGLE``)."""
    import torch.distributed as dist

    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(value: float, world: World, op: str = "sum") -> float:
    """A scalar reduced over ranks (``sum``, ``max`` or ``min``); the value itself without a group."""
    if not world.active or world.world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return float(t.item())


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj`` in rank order (picklable objects: metric dicts, counts)."""
    if not world.active or world.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    """Wait for every rank (no-op without a group)."""
    if world.active and world.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def average_grads(params: Sequence[nn.Parameter], world: World) -> None:
    """Average the gradients of parameters outside the DDP/FSDP module (the PPO value head) over ranks."""
    if not world.active or world.world_size == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world.world_size)


# ------------------------------------------------------------------------------------------ model wrapping


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (``model.layers`` of a HF causal LM, under a peft wrapper or not)."""
    for name, module in model.named_modules():
        if name.endswith("model.layers") and isinstance(module, nn.ModuleList):
            return list(module)
    raise ValueError("no decoder layers found (expected a ModuleList named '*model.layers')")


def wrap_model(model: nn.Module, world: World, param_dtype: torch.dtype) -> nn.Module:
    """The training view of ``model`` for the strategy.

    * ``ddp``: ``DistributedDataParallel`` around it (broadcasts rank 0's weights once). Buffers are not
      re-synced at every forward (``forward_sync_buffers=False``): the rotary tables are constants, and a
      broadcast would be a collective inside forwards whose number differs between ranks.
    * ``fsdp``: FSDP2 ``fully_shard`` on every decoder layer, then on the root (in place). Mixed precision
      from the model recipe: parameters all-gathered in the recipe's dtype, gradients reduced in float32.
    * ``none``: the model itself.
    """
    if world.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, forward_sync_buffers=False)
    if world.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for layer in decoder_layers(model):
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    return model


def distribute_policy(policy: Policy, world: World) -> tuple[nn.Module, Policy]:
    """(training model, the engine's policy) for the strategy.

    ddp: the DDP wrapper trains, the engine generates with the wrapped module itself (same weights, no
    collectives). fsdp: the model is sharded in place; the engine gets an unsharded replica made before
    sharding, whose trainable weights ``sync_replica`` refreshes after every update. none: the model itself.
    """
    if world.strategy == "fsdp":
        replica = copy.deepcopy(policy.model)
        train_model = wrap_model(policy.model, world, policy.dtype)
        return train_model, replace(policy, model=replica)
    return wrap_model(policy.model, world, policy.dtype), policy


def reference_context(policy: Policy, train_model: nn.Module, world: World
                      ) -> Callable[[], contextlib.AbstractContextManager[nn.Module]]:
    """The KL reference: a context yielding the module that computes π_ref.

    LoRA under FSDP disables the adapters of the sharded training model, so its forwards stay in step across
    ranks; otherwise ``Policy.reference`` (adapters off on the plain model, or the frozen full copy).
    """
    if world.strategy == "fsdp" and policy.lora:

        @contextlib.contextmanager
        def ref() -> Iterator[nn.Module]:
            with torch.no_grad(), train_model.disable_adapter():
                yield train_model

        return ref
    return policy.reference


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (the model itself otherwise)."""
    return model.module if hasattr(model, "module") and model.__class__.__name__ == "DistributedDataParallel" else model


def no_sync(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """DDP: skip the gradient all-reduce except at the mini-batch's last (synchronised) backward."""
    if not last and hasattr(model, "no_sync") and model.__class__.__name__ == "DistributedDataParallel":
        return model.no_sync()
    return contextlib.nullcontext()


def trainable_names(model: nn.Module) -> list[str]:
    """Fully-qualified names of the parameters that require grad, without a DDP ``module.`` prefix."""
    return [n for n, p in unwrap(model).named_parameters() if p.requires_grad]


def sync_replica(train_model: nn.Module, replica: nn.Module) -> None:
    """Copy the trainable weights of the sharded training model into the engine's unsharded replica.

    Every rank calls this after each update (it all-gathers the shards). With LoRA only the adapters move.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    names = set(trainable_names(train_model))
    full = get_model_state_dict(train_model, options=StateDictOptions(full_state_dict=True))
    params = dict(replica.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(full[name])


def grad_norm_value(norm: torch.Tensor) -> torch.Tensor:
    """A plain tensor from ``clip_grad_norm_``'s result (a DTensor under FSDP)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# ------------------------------------------------------------------------------------------ run folder


WORLD_FILE = "world.json"


def record_world(run: Path, world: World) -> None:
    """Append this launch's world (size, strategy, backend) to ``<run>/world.json`` (rank 0 only).

    A resumed run that changed its world size keeps one entry per launch, newest last.
    """
    path = run / WORLD_FILE
    launches = json.loads(path.read_text())["launches"] if path.is_file() else []
    launches.append({"world_size": world.world_size, "strategy": world.strategy, "backend": world.backend})
    path.write_text(json.dumps({"world_size": world.world_size, "launches": launches}, indent=1))


@contextlib.contextmanager
def rank_log(logs: Path, rank: int, world_size: int) -> Iterator[Path]:
    """Write this rank's output to ``<run>/logs/rank{r}.log``.

    Ranks other than 0 send their stdout and stderr (tracebacks, faults) there at the file-descriptor level;
    rank 0 keeps the console for progress and appends its traceback on failure. Yields the log path.
    """
    import sys
    import traceback

    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"rank{rank}.log"
    with path.open("a", buffering=1) as fh:
        fh.write(f"rank {rank}/{world_size} pid={os.getpid()}\n")
        if rank != 0:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
        try:
            yield path
        except BaseException:
            fh.write(traceback.format_exc())
            raise
        finally:
            fh.write("rank exit\n")
