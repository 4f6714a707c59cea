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

from collections.abc import Callable, Mapping, Sequence
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


BACKENDS = ("embedded", "real")
"""``env.backend`` choices."""
EXECUTORS = ("inline", "thread", "process")
"""``env.executor`` choices."""


@dataclass
class EnvConfig:
    """The environment family and its backend: the ``env`` section of the run config."""

    name: str = "webshop"
    """An env family: a package under ``envs/`` that exposes ``FAMILY`` (``t2po envs list``)."""
    backend: str = "embedded"
    """``embedded`` (procedural, in-process) or ``real`` (adapter to the real backend)."""
    url: str | None = None
    """Real backends over HTTP: the server URL (WebShop env server or Search-R1 retriever)."""
    max_turns: int | None = None
    """Maximum turns per episode; null = the family's own limit (``EnvFamily.max_turns``, envs.md §1)."""
    history_length: int = 2
    """Past (observation, action) pairs shown in the prompt."""
    num_train_tasks: int = 4096
    """Size of the generated train split."""
    num_val_tasks: int = 256
    """Size of the generated validation split."""
    difficulty: int = 1
    """Embedded generators: difficulty level (larger catalogues, rooms or hop counts)."""
    executor: str = "inline"
    """Batched runner: ``inline``, ``thread`` or ``process``."""
    timeout_s: float = 30.0
    """Real backends: per-request timeout."""
    retries: int = 2
    """Real backends: bounded retries per request."""
    max_think_tokens: int | None = None
    """Per-env default for ``t2po.tti.max_think_tokens`` when that is unset."""
    prompt_style: str = "full"
    """``full`` (the paper's templates) or a shorter style the family offers (``EnvFamily.prompt_styles``;
    WebShop: ``compact``, for small CPU models)."""
    reward: str = "success"
    """``success``: the family's own reward, T2PO's ``10 · won`` (envs.md §1). ``score``: ``10 · task_score``
    at the end of an episode, partial credit as in the original WebShop (Yao et al. 2022: the purchase's
    attribute/option/price score in [0, 1]); Search-QA's score is its exact match and ALFWorld's is ``won``, so
    for them the two are the same. Success metrics always count wins."""


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
        name: the family's name; equal to the name of its package under ``envs/`` (the registry checks).
        make_env: build a fresh TextEnv for a backend (``embedded`` or ``real``) from an EnvConfig.
        sample_tasks: ``(split, indices, base_seed, difficulty) -> list[Task]``; deterministic.
        project: ``(llm_text, admissible) -> Projection``; pure.
        build_prompt: see ``PromptBuilder``.
        expert_policy: ``(seed) -> Policy`` that solves every task (responses in the trained format).
        random_policy: ``(seed) -> Policy`` that acts uniformly at random among admissible actions.
        stop_strings: generation stops after any of these (e.g. ``</action>``).
        has_gold_answers: tasks carry gold answers (needed by A2TGPO).
        template_version: hash/version string of the prompt templates, recorded in every run.
        max_turns: the turn limit of an episode when ``env.max_turns`` is null (envs.md §1).
        input_hint: what a person types in ``t2po envs play --policy human``, with an example action of
            this env.
        human_template: how a typed line becomes LLM text for ``project`` (``{line}`` is replaced), so a
            person's action goes through the same projection as the model's.
        forced_answer_prompt: A2TGPO probe text that forces an answer (Search-QA only), else None.
        demo_policy: ``(seed) -> Policy`` whose transcripts form the warm-start corpus; it must act only on
            what the prompt shows. None means the expert already does (ALFWorld, Search-QA); WebShop's
            expert reads the hidden target ASIN, so its demonstrator is a separate, fair policy.
        extra_prompt_styles: prompt builders besides ``build_prompt`` (style ``full``), by style name
            (``env.prompt_style``).
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
    max_turns: int
    input_hint: str
    human_template: str = "<think>human</think>\n<action>{line}</action>"
    forced_answer_prompt: str | None = None
    demo_policy: Callable[[int], Policy] | None = None
    extra_prompt_styles: Mapping[str, PromptBuilder] = field(default_factory=dict)

    @property
    def prompt_styles(self) -> tuple[str, ...]:
        """Every valid ``env.prompt_style`` of this family, ``full`` first."""
        return ("full", *self.extra_prompt_styles)

    def prompt_builder(self, style: str) -> PromptBuilder:
        """The prompt builder of ``style`` (validated against ``prompt_styles`` before a run starts)."""
        return self.build_prompt if style == "full" else self.extra_prompt_styles[style]

    def demonstrator(self, seed: int) -> Policy:
        """The warm-start demonstrator: ``demo_policy`` when set, else the expert."""
        return (self.demo_policy or self.expert_policy)(seed)

    def turn_limit(self, cfg: EnvConfig) -> int:
        """``env.max_turns`` when set, else the family's own limit."""
        return cfg.max_turns if cfg.max_turns is not None else self.max_turns


REWARDS = ("success", "score")
"""Values of ``env.reward``."""
SCORE_REWARD_SCALE = 10.0
"""``env.reward=score``: a perfect score earns what a win earns (T2PO's win reward is 10)."""


class ScoreRewardEnv:
    """A TextEnv whose terminal reward is ``SCORE_REWARD_SCALE · info["task_score"]`` (``env.reward=score``);
    non-terminal rewards, observations and infos are the wrapped env's."""

    def __init__(self, env: TextEnv) -> None:
        self.env = env

    def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
        return self.env.reset(task)

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        obs, reward, done, info = self.env.step(action)
        if done:
            reward = SCORE_REWARD_SCALE * float(info.get("task_score", 0.0))
        return obs, reward, done, info

    def close(self) -> None:
        self.env.close()


def build_env(family: EnvFamily, cfg: EnvConfig) -> TextEnv:
    """A fresh env of ``family`` for ``cfg`` with the reward ``cfg.reward`` asks for."""
    env = family.make_env(cfg)
    return ScoreRewardEnv(env) if cfg.reward == "score" else env
