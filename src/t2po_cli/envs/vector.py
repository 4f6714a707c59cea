"""Group-aware batched env runner (envs.md §0.1 layer 4, §0.2).

``VectorEnv`` holds ``B = tasks × group_size`` environments of one family. Each block of ``group_size``
consecutive envs is one group: the copies share the task (hence its seed) and a ``uid``. ``step`` only
touches envs that are still active; finished envs are masked out and return ``None``.

Executors (the same results, different concurrency):

* ``inline``  — a plain loop, for the embedded envs (pure Python, no I/O);
* ``thread``  — a thread pool, for HTTP backends where time is spent waiting on sockets;
* ``process`` — spawn-started worker processes, each owning a slice of the envs (real ALFWorld wraps a
  native planner that must not share a process; spawn avoids forking a process with threads).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from t2po_cli.envs.base import StepResult, Task, TextEnv
from t2po_cli.errors import UserError

EXECUTORS = ("inline", "thread", "process")


def _build_env(family: str, cfg: Any) -> TextEnv:
    from t2po_cli.envs.registry import get_family

    return get_family(family).make_env(cfg)


def _worker(conn: Any, family: str, cfg: Any, count: int) -> None:
    """Process-executor loop: owns ``count`` envs; answers (command, payload) messages until ``close``."""
    envs = [_build_env(family, cfg) for _ in range(count)]
    while True:
        cmd, payload = conn.recv()
        try:
            if cmd == "reset":
                conn.send(("ok", [envs[j].reset(task) for j, task in payload]))
            elif cmd == "step":
                conn.send(("ok", [envs[j].step(action) for j, action in payload]))
            else:
                for env in envs:
                    env.close()
                conn.send(("ok", None))
                return
        except Exception as e:  # sent back and re-raised in the parent with its type name
            conn.send(("error", f"{type(e).__name__}: {e}"))


class _LocalExecutor:
    """Envs in this process; ``threads > 0`` runs calls on a thread pool."""

    def __init__(self, family: str, cfg: Any, num_envs: int, threads: int) -> None:
        self.envs = [_build_env(family, cfg) for _ in range(num_envs)]
        self.pool = ThreadPoolExecutor(max_workers=threads) if threads > 0 else None

    def run(self, fn: Callable[[int, Any], Any], pairs: list[tuple[int, Any]]) -> list[Any]:
        if self.pool is None:
            return [fn(i, x) for i, x in pairs]
        return list(self.pool.map(lambda p: fn(*p), pairs))

    def reset(self, pairs: list[tuple[int, Task]]) -> list[Any]:
        return self.run(lambda i, task: self.envs[i].reset(task), pairs)

    def step(self, pairs: list[tuple[int, str]]) -> list[Any]:
        return self.run(lambda i, action: self.envs[i].step(action), pairs)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


class _ProcessExecutor:
    """Env ``i`` lives in worker ``i % workers`` as that worker's env ``i // workers``."""

    def __init__(self, family: str, cfg: Any, num_envs: int, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.workers = max(1, min(workers, num_envs))
        self.conns, self.procs = [], []
        for w in range(self.workers):
            parent, child = ctx.Pipe()
            count = len(range(w, num_envs, self.workers))
            proc = ctx.Process(target=_worker, args=(child, family, cfg, count), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def _call(self, cmd: str, pairs: list[tuple[int, Any]]) -> list[Any]:
        by_worker: dict[int, list[tuple[int, int, Any]]] = {}
        for i, x in pairs:
            by_worker.setdefault(i % self.workers, []).append((i, i // self.workers, x))
        for w, items in by_worker.items():
            self.conns[w].send((cmd, [(j, x) for _, j, x in items]))
        out: dict[int, Any] = {}
        for w, items in by_worker.items():
            status, results = self.conns[w].recv()
            if status != "ok":
                raise RuntimeError(f"env worker {w} failed: {results}")
            out.update({i: r for (i, _, _), r in zip(items, results, strict=True)})
        return [out[i] for i, _ in pairs]

    def reset(self, pairs: list[tuple[int, Task]]) -> list[Any]:
        return self._call("reset", pairs)

    def step(self, pairs: list[tuple[int, str]]) -> list[Any]:
        return self._call("step", pairs)

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            try:
                conn.send(("close", None))
                conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()


@dataclass(frozen=True)
class EnvSlot:
    """Which task and group an env serves."""

    task: Task
    group: int
    uid: str


class VectorEnv:
    """``num_envs`` environments of one family stepped in lockstep.

    Args:
        family: env family name (``webshop``, ``alfworld``, ``searchqa``).
        cfg: the ``EnvConfig`` every env is built from (picklable, for the process executor).
        num_envs: B, the number of environments.
        executor: ``inline``, ``thread`` or ``process``; defaults to ``cfg.executor``.
        workers: threads or processes (default: min(B, 8) threads, min(B, 2) processes).
    """

    def __init__(self, family: str, cfg: Any, num_envs: int, *, executor: str | None = None,
                 workers: int | None = None) -> None:
        kind = executor or cfg.executor
        if kind not in EXECUTORS:
            raise UserError(f"unknown env executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
        if num_envs < 1:
            raise UserError("VectorEnv needs at least one environment")
        self.num_envs = num_envs
        if kind == "process":
            self._ex: Any = _ProcessExecutor(family, cfg, num_envs, workers or min(num_envs, 2))
        else:
            threads = (workers or min(num_envs, 8)) if kind == "thread" else 0
            self._ex = _LocalExecutor(family, cfg, num_envs, threads)
        self.slots: list[EnvSlot] = []
        self.active = [False] * num_envs

    def reset(self, tasks: Sequence[Task], group_size: int) -> list[tuple[str, dict[str, Any]]]:
        """Reset env ``i`` on ``tasks[i // group_size]`` (§0.2: a group shares task, seed and uid).

        Raises:
            UserError: ``len(tasks) * group_size`` differs from ``num_envs``.
        """
        if group_size < 1 or len(tasks) * group_size != self.num_envs:
            raise UserError(f"{len(tasks)} tasks × group size {group_size} must equal {self.num_envs} envs")
        self.slots = [
            EnvSlot(task=tasks[i // group_size], group=i // group_size,
                    uid=f"{tasks[i // group_size].env}-{tasks[i // group_size].split}-"
                        f"{tasks[i // group_size].index}-{i // group_size}")
            for i in range(self.num_envs)
        ]
        results = self._ex.reset([(i, s.task) for i, s in enumerate(self.slots)])
        self.active = [True] * self.num_envs
        return results

    def step(self, actions: Sequence[str | None]) -> list[StepResult | None]:
        """Step every active env whose action is not None; others get ``None`` (masked out, §0.2)."""
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        pairs = [(i, a) for i, a in enumerate(actions) if self.active[i] and a is not None]
        out: list[StepResult | None] = [None] * self.num_envs
        for (i, _), (obs, reward, done, info) in zip(pairs, self._ex.step(pairs), strict=True):
            out[i] = StepResult(obs=obs, reward=reward, done=done, info=info)
            if done:
                self.active[i] = False
        return out

    def close(self) -> None:
        """Close every env (and stop worker threads or processes)."""
        self._ex.close()

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
