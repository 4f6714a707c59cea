"""Multi-turn rollout collector: prompt → generate → [turn hook may resample] → project → env.step.

One training row per active environment turn, as in the reference runs (gigpo.md §1): the row carries
the prompt and response tokens, the step reward, the invalid flag and the anchor observation. Finished
environments produce no rows. The copies of one task share task and seed (envs.md §0.2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from t2po_cli.envs.base import EnvFamily, HistoryEntry, Task, TextEnv
from t2po_cli.hooks.base import TokenHookFactory, TurnHook
from t2po_cli.rollout.constraint import ActionSpace, instruction_words
from t2po_cli.rollout.types import Generation, SamplingParams


@dataclass
class TurnRow:
    """One environment turn = one training row.

    Attributes:
        traj_id: trajectory (environment) index within the rollout.
        group_id: task group id (the copies of one task share it).
        turn: 0-based turn index.
        prompt_ids: prompt token ids (chat template applied, left-truncated).
        response_ids: ``LongTensor[L]`` generated tokens.
        rollout_logps: ``FloatTensor[L]`` log-probs under the raw policy at sampling time.
        forced_mask: ``BoolTensor[L]`` tokens forced by the thinking intervention.
        signals: ``FloatTensor[L]`` M_t per generated token.
        entropies: ``FloatTensor[L]`` entropy per generated token.
        reward: env reward returned by this turn's step.
        invalid: the projection judged the action invalid.
        anchor_obs: raw observation shown at this turn (GiGPO anchor, envs.md §0.2).
        response_text: decoded response.
        action: projected env action.
        hook_report: the token hook's report for the accepted sample ({} without hooks).
        episode_reward: filled at episode end: sum of the trajectory's rewards.
        won: filled at episode end: the trajectory's success.
        finish_reason: ``eos``, ``stop`` or ``length``.
    """

    traj_id: int
    group_id: int
    turn: int
    prompt_ids: list[int]
    response_ids: torch.Tensor
    rollout_logps: torch.Tensor
    forced_mask: torch.Tensor
    signals: torch.Tensor
    entropies: torch.Tensor
    reward: float
    invalid: bool
    anchor_obs: str
    response_text: str
    action: str
    hook_report: dict[str, Any] = field(default_factory=dict)
    episode_reward: float = 0.0
    won: bool = False
    finish_reason: str = "eos"


@dataclass
class Episode:
    """Summary of one trajectory."""

    traj_id: int
    group_id: int
    task: Task
    reward: float
    won: bool
    turns: int
    invalid_turns: int
    tokens: int
    task_score: float


@dataclass
class Rollout:
    """All rows and episode summaries of one rollout, plus generation accounting.

    Attributes:
        rows: one ``TurnRow`` per environment turn, in (env, turn) order.
        episodes: one ``Episode`` per environment.
        generated_tokens: tokens of the accepted samples.
        extra_gen_tokens: tokens of samples a turn hook discarded (TDS regenerations).
        tds_seconds: wall time inside the turn hook (scoring and regenerations).
        gen_seconds: wall time of the base generations.
        env_seconds: wall time of env resets and steps.
        hook_metrics: the turn hook's metrics for this rollout (``TurnHook.metrics()``), {} without one.
    """

    rows: list[TurnRow]
    episodes: list[Episode]
    generated_tokens: int
    extra_gen_tokens: int
    tds_seconds: float
    gen_seconds: float
    env_seconds: float
    hook_metrics: dict[str, float] = field(default_factory=dict)


GenerateFn = Callable[[list[list[int]], SamplingParams, "TokenHookFactory | None", "list[ActionSpace | None] | None",
                       list[torch.Generator]], Generation]
"""``(prompt_ids, params, token_hook_factory, admissible_or_None, streams) → Generation``; ``streams[j]`` is the
episode stream of row j (``rollout.streams``)."""


def collect(
    *,
    family: EnvFamily,
    make_env: Callable[[], TextEnv],
    tasks: list[Task],
    group_size: int,
    encode_prompt: Callable[[str], list[int]],
    generate: GenerateFn,
    params: SamplingParams,
    max_turns: int,
    history_length: int,
    streams: Sequence[torch.Generator],
    token_hook_factory: TokenHookFactory | None = None,
    turn_hook: TurnHook | None = None,
    constrained_actions: bool = False,
    constrained_queries: bool = False,
    generate_finished: bool = False,
    prompt_style: str = "full",
) -> Rollout:
    """Run ``len(tasks) × group_size`` episodes in lockstep and return the training rows.

    Args:
        family: the env family (projection, prompts).
        make_env: builds one fresh TextEnv.
        tasks: distinct tasks; environment ``i`` plays ``tasks[i // group_size]``.
        group_size: copies per task.
        encode_prompt: user message → prompt token ids (chat template + truncation).
        generate: ``(prompt_ids, params, hook_factory, admissible, streams) → Generation`` (the engine).
        params: sampling parameters.
        max_turns: turn limit.
        history_length: history entries in the prompt.
        streams: one random stream per environment (``rollout.streams.episode_streams``); every generate
            call, TDS regenerations included, gets the streams of the rows it generates, so an episode's
            tokens come from its own stream whatever batch it is generated in.
        token_hook_factory: T2PO token hook factory or None (baseline).
        turn_hook: T2PO turn hook (TDS) or None (baseline; always None in validation).
        constrained_actions: pass each env's admissible list to ``generate`` so the engine keeps the action
            on it (``rollout.constraint``); without it ``generate`` gets None.
        constrained_queries: with ``constrained_actions``, also restrict a placeholder action's free text
            (WebShop's search) to the words of the task instruction.
        generate_finished: ``t2po.compat=released`` emulation (t2po.md §8 #4): finished environments stay in
            every generation batch (prompted with their last observation) and TDS regenerates them too, as in
            the release; their samples are then dropped. They cost compute (``perf/generated_tokens``,
            ``t2po/tds/extra_gen_tokens``) and feed the released shared TTI state, but make no rows and no
            metrics. Off (the default), only active environments are generated for.
        prompt_style: ``env.prompt_style``; ``full`` uses ``family.build_prompt``, another style the family's
            builder of that name (``EnvFamily.prompt_builder``).
    """
    n = len(tasks) * group_size
    if len(streams) != n:
        raise ValueError(f"collect got {len(streams)} streams for {n} episodes (one per episode)")
    build_prompt = family.prompt_builder(prompt_style) if prompt_style != "full" else family.build_prompt
    envs = [make_env() for _ in range(n)]
    env_tasks = [tasks[i // group_size] for i in range(n)]
    obs: list[str] = []
    infos: list[dict[str, Any]] = []
    t_env = time.perf_counter()
    for env, task in zip(envs, env_tasks, strict=True):
        o, info = env.reset(task)
        obs.append(o)
        infos.append(info)
    env_seconds = time.perf_counter() - t_env
    histories: list[list[HistoryEntry]] = [[] for _ in range(n)]
    rows_by_env: list[list[TurnRow]] = [[] for _ in range(n)]
    done = [False] * n
    won = [False] * n
    task_scores = [0.0] * n
    generated = extra = 0
    tds_s = gen_s = 0.0
    if turn_hook is not None:
        turn_hook.start_episode_batch(n)
    for turn in range(max_turns):
        active = [i for i in range(n) if not done[i]]
        if not active:
            break
        batch = list(range(n)) if generate_finished else active
        prompts = [
            encode_prompt(
                build_prompt(
                    env_tasks[i], histories[i], obs[i], infos[i], turn=turn, history_length=history_length
                )
            )
            for i in batch
        ]
        admissible = [_action_space(infos[i], env_tasks[i], constrained_queries) for i in batch] \
            if constrained_actions else None
        batch_streams = [streams[i] for i in batch]
        t0 = time.perf_counter()
        gen = generate(prompts, params, token_hook_factory, admissible, batch_streams)
        gen_s += time.perf_counter() - t0
        generated += gen.num_tokens()
        if turn_hook is not None:
            t1 = time.perf_counter()
            extra += _run_turn_hook(turn_hook, turn, batch, [done[i] for i in batch], prompts, gen, generate,
                                    params, token_hook_factory, admissible, batch_streams)
            tds_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        for j, i in enumerate(batch):
            if done[i]:
                continue  # generate_finished: a finished env's sample is dropped
            proj = family.project(gen.texts[j], infos[i].get("admissible"))
            anchor = str(infos[i].get("anchor_obs", obs[i]))
            o, reward, finished, info = envs[i].step(proj.action)
            rows_by_env[i].append(
                TurnRow(
                    traj_id=i, group_id=i // group_size, turn=turn, prompt_ids=prompts[j],
                    response_ids=gen.response_ids[j], rollout_logps=gen.logps[j], forced_mask=gen.forced_mask[j],
                    signals=gen.signals[j], entropies=gen.entropies[j], reward=float(reward),
                    invalid=not proj.valid, anchor_obs=anchor, response_text=gen.texts[j], action=proj.action,
                    hook_report=gen.hook_reports[j] if gen.hook_reports else {},
                    finish_reason=gen.finish_reasons[j],
                )
            )
            histories[i].append(HistoryEntry(observation=obs[i], action=proj.action))
            obs[i], infos[i] = o, info
            won[i] = bool(info.get("won", False))
            task_scores[i] = float(info.get("task_score", 0.0))
            done[i] = bool(finished)
        env_seconds += time.perf_counter() - t2
    for env in envs:
        env.close()
    ro = _finish(rows_by_env, env_tasks, group_size, won, task_scores, generated, extra, tds_s, gen_s, env_seconds)
    if turn_hook is not None:
        ro.hook_metrics = turn_hook.metrics()
    return ro


def _action_space(info: dict[str, Any], task: Task, with_words: bool) -> ActionSpace | None:
    """The row's admissible actions for the engine's constraint (None when the env lists none)."""
    actions = info.get("admissible")
    if actions is None:
        return None
    return ActionSpace(tuple(actions), tuple(instruction_words(task.instruction)) if with_words else None)


def _run_turn_hook(
    turn_hook: TurnHook,
    turn: int,
    batch: list[int],
    finished: list[bool],
    prompts: list[list[int]],
    gen: Generation,
    generate: GenerateFn,
    params: SamplingParams,
    token_hook_factory: TokenHookFactory | None,
    admissible: list[ActionSpace | None] | None,
    streams: list[torch.Generator],
) -> int:
    """Let TDS resample rows of this turn in place (t2po.md §5.1). Returns the tokens of discarded samples.

    A regeneration continues the rows' own episode streams (``streams[j]`` for row j of the turn's batch)."""
    discarded = 0

    def regenerate(positions: list[int]) -> list[float | None]:
        sub = generate([prompts[p] for p in positions], params, token_hook_factory,
                       None if admissible is None else [admissible[p] for p in positions],
                       [streams[p] for p in positions])
        gen.replace_rows(positions, sub)
        return [_score(sub, j) for j in range(len(positions))]

    def discarded_tokens(positions: list[int]) -> int:
        nonlocal discarded
        n = sum(len(gen.response_ids[p]) for p in positions)
        discarded += n
        return n

    base = [_score(gen, j) for j in range(len(batch))]
    turn_hook.refine(turn, batch, base, regenerate, finished=finished, discarded_tokens=discarded_tokens)
    return discarded


def _score(gen: Generation, j: int) -> float | None:
    if not gen.hook_reports:
        return None
    value = gen.hook_reports[j].get("turn_score")
    return None if value is None else float(value)


def _finish(
    rows_by_env: list[list[TurnRow]],
    env_tasks: list[Task],
    group_size: int,
    won: list[bool],
    task_scores: list[float],
    generated: int,
    extra: int,
    tds_s: float,
    gen_s: float,
    env_s: float,
) -> Rollout:
    rows: list[TurnRow] = []
    episodes: list[Episode] = []
    for i, env_rows in enumerate(rows_by_env):
        total = sum(r.reward for r in env_rows)
        for r in env_rows:
            r.episode_reward = total
            r.won = won[i]
        rows.extend(env_rows)  # (env, turn) order: GiGPO similarity grouping depends on it (errata 6)
        episodes.append(
            Episode(
                traj_id=i, group_id=i // group_size, task=env_tasks[i], reward=total, won=won[i],
                turns=len(env_rows), invalid_turns=sum(r.invalid for r in env_rows),
                tokens=sum(len(r.response_ids) for r in env_rows), task_score=task_scores[i],
            )
        )
    return Rollout(rows=rows, episodes=episodes, generated_tokens=generated, extra_gen_tokens=extra,
                   tds_seconds=tds_s, gen_seconds=gen_s, env_seconds=env_s)
