"""The environment contract (envs.md §0) shared by every env family and the rollout collector.

Layers:
1. ``TextEnv``: one raw episode, no prompts, no LLM tags.
2. ``project``: pure function from the LLM's text to an env action plus validity flags.
3. ``build_prompt``: the per-turn user message from the task, the history and the current observation.
4. ``EnvFamily``: bundles the above plus task generation, the expert and random policies.

Rules (envs.md §0.1): ``reset`` is deterministic given (task, seed); ``step`` after ``done`` is an
idempotent no-op returning the cached terminal result; the env reward carries the env's own scale; the
invalid-action penalty is the trainer's business, never the env's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Task:
    """One generated task.

    Attributes:
        env: env family name.
        split: ``train`` or ``val``.
        index: index within the split.
        seed: seed the task (and its world) was generated from.
        instruction: the task text shown to the agent ("Your task is to: ..." or the question).
        gold_answers: gold answers (Search-QA); empty for envs without them.
        payload: family-specific data needed to rebuild the world (JSON-serialisable).
    """

    env: str
    split: str
    index: int
    seed: int
    instruction: str
    gold_answers: tuple[str, ...] = ()
    payload: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Projection:
    """Result of projecting LLM text to an env action (envs.md §0.4)."""

    action: str
    valid: bool
    format_valid: bool


@dataclass
class StepResult:
    """What ``TextEnv.step`` returns, as a record.

    ``info`` always has ``won`` (bool), ``admissible`` (list[str] | None), ``task_score`` (float) and
    ``anchor_obs`` (str: the raw observation GiGPO groups on, envs.md §0.2), plus family extras.
    """

    obs: str
    reward: float
    done: bool
    info: dict[str, Any]


@runtime_checkable
class TextEnv(Protocol):
    """One raw episode."""

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        """Start the task. Returns (observation, info) with the keys listed on ``StepResult``."""
        ...

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Apply one action. After ``done`` this returns the cached terminal result unchanged."""
        ...

    def close(self) -> None:
        """Release resources (HTTP sessions, worker processes)."""
        ...


@dataclass(frozen=True)
class HistoryEntry:
    """One past turn as shown in the prompt."""

    observation: str
    action: str


class PromptBuilder(Protocol):
    def __call__(
        self,
        task: Task,
        history: Sequence[HistoryEntry],
        observation: str,
        info: dict[str, Any],
        *,
        turn: int,
        history_length: int,
    ) -> str:
        """The user message for this turn (no chat template applied)."""
        ...


# A policy maps (task, observation, info, turn) to the LLM-formatted response text, e.g.
# "<think>...</think><action>click[buy now]</action>". Experts solve every generated task.
Policy = Callable[[Task, str, dict[str, Any], int], str]


@dataclass(frozen=True)
class EnvFamily:
    """Everything the trainer and the CLI need to know about one environment family.

    Attributes:
        name: ``webshop``, ``alfworld`` or ``searchqa``.
        make_env: build a fresh TextEnv for a backend (``embedded`` or ``real``) from an EnvConfig.
        sample_tasks: ``(split, indices, base_seed, difficulty) -> list[Task]``; deterministic.
        project: ``(llm_text, admissible) -> Projection``; pure.
        build_prompt: see ``PromptBuilder``.
        expert_policy: ``(seed) -> Policy`` that solves every task (responses in the trained format).
        random_policy: ``(seed) -> Policy`` that acts uniformly at random among admissible actions.
        stop_strings: generation stops after any of these (e.g. ``</action>``).
        has_gold_answers: tasks carry gold answers (needed by A2TGPO).
        template_version: hash/version string of the prompt templates, recorded in every run.
        forced_answer_prompt: A2TGPO probe text that forces an answer (Search-QA only), else None.
        demo_policy: ``(seed) -> Policy`` whose transcripts form the warm-start corpus; it must act only on
            what the prompt shows. None means the expert already does (ALFWorld, Search-QA); WebShop's
            expert reads the hidden target ASIN, so its demonstrator is a separate, fair policy.
    """

    name: str
    make_env: Callable[..., TextEnv]
    sample_tasks: Callable[..., list[Task]]
    project: Callable[[str, Sequence[str] | None], Projection]
    build_prompt: PromptBuilder
    expert_policy: Callable[[int], Policy]
    random_policy: Callable[[int], Policy]
    stop_strings: tuple[str, ...]
    has_gold_answers: bool
    template_version: str
    forced_answer_prompt: str | None = None
    demo_policy: Callable[[int], Policy] | None = None

    def demonstrator(self, seed: int) -> Policy:
        """The warm-start demonstrator: ``demo_policy`` when set, else the expert."""
        return (self.demo_policy or self.expert_policy)(seed)
