"""Adapter to the real ALFWorld engine (alfworld 0.4.2 + textworld 1.7.0, envs.md §3.12).

Each ``RealAlfworldEnv`` owns one spawn-started worker process: textworld's ``PddlEnv`` loads its problem
into a process-global native planner library, so two games cannot share a process (§2, §3.12), and a fork
would inherit the parent's threads. The worker registers the game with ``textworld.gym``, requesting ``won``
and ``admissible_commands``, wrapped with alfworld's ``AlfredDemangler`` (no shuffling) and ``AlfredInfos``.

Games come from the embedded generator (``gamefile.write_game``), so no data is downloaded. Every request
has a timeout; a silent or dead worker is killed and reported as ``BackendUnavailable``, never a hang.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import shutil
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from t2po_cli.envs.alfworld.engine import MAX_STEPS, WIN_REWARD, world_for
from t2po_cli.envs.alfworld.gamefile import INSTALL_HINT, alfworld_logic, write_game
from t2po_cli.envs.base import Task
from t2po_cli.errors import BackendUnavailable, UserError

REQUIRED_MODULES = ("alfworld", "textworld", "fast_downward")
STARTUP_TIMEOUT_S = 120.0
"""First reset: the worker imports textworld (about 2 s here) before loading the game."""


def real_backend_available() -> bool:
    """True when the ``[alfworld]`` extra (and its native planner) is importable."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES)


def _worker_main(conn: Connection) -> None:
    """Worker loop: ``("load", gamefile, max_steps)``, ``("step", command)``, ``("close",)``.

    Replies ``("ok", obs, won, done, admissible)`` or ``("error", message)``.
    """
    env = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        try:
            if msg[0] == "close":
                conn.send(("ok", "", False, True, []))
                return
            if msg[0] == "load":
                env = _make_gym_env(msg[1], msg[2])
                obs, infos = env.reset()
                conn.send(("ok", obs[0], bool(infos["won"][0]), False, list(infos["admissible_commands"][0])))
            elif msg[0] == "step":
                if env is None:
                    raise RuntimeError("step before load")
                obs, _, dones, infos = env.step([msg[1]])
                conn.send(("ok", obs[0], bool(infos["won"][0]), bool(dones[0]),
                           list(infos["admissible_commands"][0])))
            else:
                raise RuntimeError(f"unknown request {msg[0]!r}")
        except Exception as err:  # any engine failure goes back to the parent as text
            conn.send(("error", f"{type(err).__name__}: {err}"))


def _make_gym_env(gamefile: str, max_steps: int) -> Any:
    """A batch-1 synchronous textworld gym env over one game, wrapped as alfworld does (§3.12)."""
    import textworld
    import textworld.gym
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
    env_id = textworld.gym.register_games([gamefile], infos, batch_size=1, asynchronous=False,
                                          max_episode_steps=max_steps,
                                          wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])
    return textworld.gym.make(env_id)


class RealAlfworldEnv:
    """One episode on the real engine (the ``TextEnv`` protocol), same ``info`` keys as the embedded env.

    Args:
        timeout_s: per-request timeout (reset and step).
        max_steps: episode limit (50, §3.7).
        game_root: where generated game files go; a private temporary folder when None.
    """

    def __init__(self, timeout_s: float = 30.0, max_steps: int = MAX_STEPS, game_root: Path | None = None) -> None:
        if not real_backend_available():
            raise UserError(f"env.backend=real for alfworld needs the [alfworld] extra: {INSTALL_HINT}")
        self.timeout_s = float(timeout_s)
        self.max_steps = max_steps
        self._own_root = game_root is None
        self._root = Path(game_root) if game_root else Path(tempfile.mkdtemp(prefix="t2po-alfworld-"))
        self._logic = alfworld_logic()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._task: Task | None = None
        self._steps = 0
        self._terminal: tuple[str, float, bool, dict[str, Any]] | None = None
        self._started = False

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        world = world_for(task)
        gamefile = write_game(world, self._root, task.seed, self._logic)
        first = not self._started
        self._ensure_worker()
        timeout = max(self.timeout_s, STARTUP_TIMEOUT_S) if first else self.timeout_s
        obs, won, _, admissible = self._request(("load", str(gamefile), self.max_steps), timeout)
        self._task, self._steps, self._terminal = task, 0, None
        return obs, self._info(obs, won, admissible)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        if self._task is None:
            raise RuntimeError("step() before reset()")
        if self._terminal is not None:
            return self._terminal
        obs, won, done, admissible = self._request(("step", str(action)), self.timeout_s)
        self._steps += 1
        done = done or won or self._steps >= self.max_steps
        result = (obs, WIN_REWARD if won else 0.0, done, self._info(obs, won, admissible))
        if done:
            self._terminal = result
        return result

    def close(self) -> None:
        if self._conn is not None and self._proc is not None and self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("close",))
                self._proc.join(timeout=5)
        self._kill()
        if self._own_root:
            shutil.rmtree(self._root, ignore_errors=True)

    def _info(self, obs: str, won: bool, admissible: list[str]) -> dict[str, Any]:
        payload = self._task.payload if self._task is not None else {}
        return {
            "won": won,
            "admissible": admissible,
            "task_score": 1.0 if won else 0.0,
            "anchor_obs": obs,
            "task_type": payload.get("task_type"),
            "task_type_id": payload.get("task_type_id"),
            "steps": self._steps,
        }

    def _ensure_worker(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="t2po-alfworld-real")
        self._proc.start()
        child.close()
        self._conn = parent
        self._started = True

    def _request(self, msg: tuple[Any, ...], timeout: float) -> tuple[str, bool, bool, list[str]]:
        assert self._conn is not None
        try:
            self._conn.send(msg)
            ready = self._conn.poll(timeout)
            reply = self._conn.recv() if ready else None
        except (EOFError, OSError) as err:
            self._kill()
            raise BackendUnavailable(f"real ALFWorld worker died during '{msg[0]}': {err}") from err
        if reply is None:
            self._kill()
            raise BackendUnavailable(
                f"real ALFWorld worker did not answer '{msg[0]}' within {timeout:.0f}s; raise env.timeout_s "
                "or check the alfworld/textworld install"
            )
        if reply[0] == "error":
            raise BackendUnavailable(f"real ALFWorld engine failed on '{msg[0]}': {reply[1]}")
        _, obs, won, done, admissible = reply
        return obs, won, done, admissible

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def __del__(self) -> None:  # best effort: never leave a worker behind
        with contextlib.suppress(Exception):
            self._kill()
