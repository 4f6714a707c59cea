"""The collector's ``generate_finished`` (t2po.compat=released, t2po.md §8 #4): finished envs stay in every
generation batch and TDS regenerates them, yet they make no rows and no TDS metrics."""

from __future__ import annotations

from typing import Any

import torch

from t2po_cli.envs.base import Projection, Task
from t2po_cli.hooks.tds import DynamicalSampler
from t2po_cli.rollout.collector import collect
from t2po_cli.rollout.streams import seeded_streams
from t2po_cli.rollout.types import Generation, SamplingParams
from t2po_cli.tracking import keys


class Family:
    """Prompt ``env K``; the response text is the action; ``stop`` ends the episode."""

    def build_prompt(self, task: Task, history, obs: str, info, *, turn: int, history_length: int) -> str:
        return f"env {task.index} turn {turn}"

    def project(self, text: str, admissible) -> Projection:
        return Projection(action=text, valid=True, format_valid=True)


class Env:
    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        return "start", {}

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        return "next", 0.0, action == "stop", {"won": action == "stop"}

    def close(self) -> None:
        pass


def _run(generate_finished: bool) -> tuple[list[list[int]], Any, dict[str, float]]:
    calls: list[list[int]] = []
    env_streams = seeded_streams(0, 2)

    def generate(prompts: list[list[int]], params, hook_factory, admissible, streams) -> Generation:
        calls.append([p[0] for p in prompts])
        # Every call, TDS regenerations included, gets the streams of exactly the envs it generates for.
        assert [next(e for e, g in enumerate(env_streams) if g is s) for s in streams] == calls[-1]
        n = len(prompts)
        # Env 0 stops at once; env 1 never does. Scores move by 0.01 per call: always inside (0, η).
        texts = ["stop" if p[0] == 0 else "go" for p in prompts]
        score = 0.2 + 0.01 * len(calls)
        return Generation(
            prompt_ids=[list(p) for p in prompts], response_ids=[torch.tensor([7, 8]) for _ in range(n)],
            logps=[torch.zeros(2) for _ in range(n)], entropies=[torch.zeros(2) for _ in range(n)],
            signals=[torch.zeros(2) for _ in range(n)], forced_mask=[torch.zeros(2, dtype=torch.bool)] * n,
            texts=texts, finish_reasons=["eos"] * n, hook_reports=[{"turn_score": score} for _ in range(n)])

    sampler = DynamicalSampler(eta=0.3, max_resamples=1, compat="released" if generate_finished else "intended")
    tasks = [Task(env="fake", split="train", index=i, seed=i, instruction="x") for i in range(2)]
    ro = collect(family=Family(), make_env=Env, tasks=tasks, group_size=1,
                 encode_prompt=lambda msg: [int(msg.split()[1])], generate=generate, streams=env_streams,
                 params=SamplingParams(max_new_tokens=2), max_turns=3, history_length=0, turn_hook=sampler,
                 generate_finished=generate_finished)
    return calls, ro, ro.hook_metrics  # the turn hook's metrics travel inside the Rollout


def test_intended_generates_for_active_envs_only() -> None:
    calls, ro, m = _run(generate_finished=False)
    # turn 0: both; turns 1 and 2: env 1's base sample and its one resample.
    assert calls == [[0, 1], [1], [1], [1], [1]]
    assert ro.generated_tokens == 2 * 4 and ro.extra_gen_tokens == 2 * 2
    assert m[keys.TDS_ELIGIBLE] == 2.0 and m[keys.TDS_RESAMPLES_PER_TURN] == 1.0


def test_released_keeps_finished_envs_in_every_batch() -> None:
    calls, ro, m = _run(generate_finished=True)
    # Env 0 finished at turn 0 but is generated for and regenerated at turns 1 and 2, as in the release.
    assert calls == [[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]]
    assert ro.generated_tokens == 2 * 6 and ro.extra_gen_tokens == 2 * 4  # the wasted compute is counted
    # Rows, episodes and TDS metrics are the active env-turns only: the same as intended.
    assert [(r.traj_id, r.turn) for r in ro.rows] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert [e.turns for e in ro.episodes] == [1, 3] and [e.won for e in ro.episodes] == [True, False]
    assert m[keys.TDS_ELIGIBLE] == 2.0 and m[keys.TDS_RESAMPLES_PER_TURN] == 1.0
