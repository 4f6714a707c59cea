"""WebShop over HTTP: our env-server protocol (envs.md §4.7), its server and the client adapter.

Protocol (JSON, loopback only unless allow-listed):

| endpoint      | request                      | response                                             |
|---------------|------------------------------|------------------------------------------------------|
| GET /health   | —                            | ``{"status": "ok"}``                                 |
| POST /reset   | ``{goal_idx, split, seed}``  | ``{env_id, obs, instruction, available_actions}``    |
| POST /step    | ``{env_id, action}``         | ``{obs, reward, done, info, available_actions}``     |
| POST /close   | ``{env_id}``                 | ``{}``                                               |

``reward`` on the wire is the **official** purchase score in [0, 1] (what ``WebAgentTextEnv.step`` returns),
so the official env can sit behind the same protocol; the client converts it to T2PO's ``10 · won``. The
client never forwards a step after ``done`` (the official env auto-resets, §4.3).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable
from http.server import ThreadingHTTPServer
from typing import Any

from t2po_cli.envs.base import Task
from t2po_cli.envs.http_common import JsonHandler, make_server, request_json
from t2po_cli.envs.webshop.catalog import CATALOG_SEED, build_catalog
from t2po_cli.envs.webshop.engine import WIN_REWARD, WebShopEnv, format_observation, render_actions
from t2po_cli.errors import BackendUnavailable

DEFAULT_MAX_ENVS = 512
"""Concurrent environments per server; /reset beyond it answers 429 (close your envs, §4.7)."""


class WebShopServerHandler(JsonHandler):
    """Serves embedded WebShop episodes; state (``envs``, ``lock``, ``ids``, ...) is set by ``make_server``."""

    envs: dict[str, tuple[WebShopEnv, str]]
    lock: threading.Lock
    ids: Any
    max_envs: int
    catalog_size: int

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET" and path == "/health":
            return 200, {"status": "ok", "envs": len(self.envs)}
        if method != "POST" or path not in ("/reset", "/step", "/close"):
            return 404, {"error": f"no route {method} {path}; use /health, /reset, /step or /close"}
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        if path == "/reset":
            return self._reset(body)
        env_id = str(body["env_id"])
        with self.lock:
            entry = self.envs.get(env_id)
            if path == "/close":
                self.envs.pop(env_id, None)
                return 200, {}
        if entry is None:
            return 404, {"error": f"unknown env_id {env_id}; call /reset first"}
        obs, _, done, info = entry[0].step(str(body["action"]))
        # Official reward on the wire: the raw purchase score (the client applies 10 · won).
        return 200, {"obs": obs, "reward": info["task_score"] if done else 0.0, "done": done, "info": info,
                     "available_actions": info["available_actions"]}

    def _reset(self, body: dict[str, Any]) -> tuple[int, Any]:
        catalog = build_catalog(self.catalog_size, CATALOG_SEED)
        goal_idx = int(body["goal_idx"])
        if not 0 <= goal_idx < len(catalog.goals):
            return 400, {"error": f"goal_idx must be in [0, {len(catalog.goals)})"}
        task = Task(env="webshop", split=str(body.get("split", "train")), index=goal_idx,
                    seed=int(body.get("seed", 0)), instruction=catalog.goals[goal_idx]["instruction_text"],
                    payload={"goal_idx": goal_idx, "catalog_size": self.catalog_size,
                             "catalog_seed": CATALOG_SEED})
        with self.lock:
            if len(self.envs) >= self.max_envs:
                return 429, {"error": f"{self.max_envs} environments open; POST /close finished ones"}
            env_id = str(next(self.ids))
            env = WebShopEnv()
            self.envs[env_id] = (env, task.instruction)
        obs, info = env.reset(task)
        return 200, {"env_id": env_id, "obs": obs, "instruction": task.instruction,
                     "available_actions": info["available_actions"], "info": info}


def make_webshop_server(host: str = "127.0.0.1", port: int = 0, allow_hosts: Iterable[str] = (), *,
                        max_envs: int = DEFAULT_MAX_ENVS, catalog_size: int = 1000) -> ThreadingHTTPServer:
    """A bound (not yet serving) env server over the embedded catalogue."""
    return make_server(WebShopServerHandler, host, port, allow_hosts, envs={}, lock=threading.Lock(),
                       ids=itertools.count(), max_envs=max_envs, catalog_size=catalog_size)


class WebShopHttpEnv:
    """``TextEnv`` client of a §4.7 env server (ours, or the official env behind the same protocol).

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:3000``.
        timeout_s: per-request timeout.
        retries: bounded retries per request.
        backoff_s: linear back-off step between retries.
    """

    def __init__(self, url: str, *, timeout_s: float, retries: int, backoff_s: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self._kw = {"timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s}
        self._env_id: str | None = None
        self._instruction = ""
        self._terminal: tuple[str, float, bool, dict[str, Any]] | None = None

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        """Open an episode for the task's goal index (closing the previous one)."""
        self.close()
        reply = request_json(f"{self.url}/reset", {"goal_idx": int(task.payload["goal_idx"]),
                                                   "split": task.split, "seed": task.seed}, **self._kw)
        self._env_id, self._instruction, self._terminal = str(reply["env_id"]), reply["instruction"], None
        info = self._info(reply["obs"], reply.get("info") or {}, reply["available_actions"], 0.0, False)
        return reply["obs"], info

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Forward one action; after done, the cached terminal result (never forwarded)."""
        if self._terminal is not None:
            return self._terminal
        if self._env_id is None:
            raise RuntimeError("step() before reset()")
        reply = request_json(f"{self.url}/step", {"env_id": self._env_id, "action": str(action)}, **self._kw)
        done = bool(reply["done"])
        server_info = reply.get("info") or {}
        score = float(server_info.get("task_score", reply["reward"])) if done else 0.0
        won = done and score == 1.0
        info = self._info(reply["obs"], server_info, reply["available_actions"], score, won)
        result = (reply["obs"], WIN_REWARD if won else 0.0, done, info)
        if done:
            self._terminal = result
            self.close()
        return result

    def close(self) -> None:
        """Close the server-side env (best effort: a dead server has nothing left to leak)."""
        if self._env_id is None:
            return
        env_id, self._env_id = self._env_id, None
        with contextlib.suppress(BackendUnavailable):
            request_json(f"{self.url}/close", {"env_id": env_id}, **{**self._kw, "retries": 0})

    def _info(self, obs: str, server_info: dict[str, Any], available: dict[str, Any], score: float,
              won: bool) -> dict[str, Any]:
        return {**server_info, "won": won, "task_score": score, "admissible": render_actions(available),
                "available_actions": available, "anchor_obs": format_observation(obs, self._instruction),
                "instruction": self._instruction}
