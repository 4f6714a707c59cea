"""The advantage estimators by name (torch-free).

Every module in ``algo/estimators/`` that defines ``ESTIMATOR = Estimator(...)`` is one estimator: the
module is the only place that names it (design.md §1). Its params dataclass *is* its config section
(``algo.<name>``, composed into the run config's schema), its group needs are checked by ``config.validate``,
and the trainer calls ``ESTIMATOR.advantages`` without knowing which one it is. Adding an estimator is one
module plus one recipe (CONTRIBUTING.md, "Adding an estimator").

Importing this module (and the estimator modules) imports no torch: ``t2po train --dry-run`` validates a
config without it. The estimators import their torch math inside ``advantages``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from t2po_cli.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from t2po_cli.algo.advantages import RowBatch


@dataclass(frozen=True)
class EstimatorInputs:
    """What the trainer hands an estimator for one step.

    Attributes:
        rows: the step's rows (``algo.advantages.RowBatch``, N rows).
        penalty: κ, the invalid-action penalty actually applied (0 when it is off).
        values: V(s_t) per row from the value head, ``FloatTensor[N]``; only for ``needs_values``.
        gold_logps: ℓ per row, the gold answer's log-prob after the row's prompt, ``FloatTensor[N]``; only
            for ``needs_gold_answers`` (a2tgpo.md §2.1).
    """

    rows: RowBatch
    penalty: float
    values: torch.Tensor | None = None
    gold_logps: torch.Tensor | None = None


PolicyLoss = Callable[..., "tuple[torch.Tensor, dict[str, float]]"]
"""``(rows_of_chunk, logps [B,T], old_logps [B,T], adv [B,T], mask [B,T]) → (loss, stats)``: a policy loss
that replaces the PPO-clip term (A²TGPO's turn-level clip)."""


@dataclass
class EstimatorOutput:
    """What an estimator returns for one step.

    Attributes:
        advantages: A per row, ``FloatTensor[N]``.
        returns: value targets per row, ``FloatTensor[N]`` (the advantages when there is no critic).
        stats: metric key → value (keys from ``tracking/keys.py``).
        policy_loss: a loss that replaces PPO-clip for this step, or None.
        warning: one line for the console (e.g. a collapsing process signal), or None.
    """

    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, float] = dataclasses.field(default_factory=dict)
    policy_loss: PolicyLoss | None = None
    warning: str | None = None


@dataclass(frozen=True)
class Estimator:
    """One advantage estimator.

    Attributes:
        name: ``algo.name`` value and the name of its config section ``algo.<name>``.
        params: its settings, a torch-free dataclass with a docstring per field; the config section's type.
            It may define ``validate(self, key: str) -> None`` raising ``ConfigError`` (``key`` is
            ``algo.<name>``) and ``resolved(self)`` returning the settings to compute with (presets).
        advantages: ``(EstimatorInputs, params) → EstimatorOutput``.
        min_group_size: smallest ``trainer.group_size`` it can work with (2 for group baselines).
        needs_values: the trainer attaches a value head and passes V(s_t) (a critic).
        needs_gold_answers: the trainer passes the gold answer's log-probs; the env must have gold answers.
        summary: one line for listings.
    """

    name: str
    params: type
    advantages: Callable[[EstimatorInputs, Any], EstimatorOutput]
    min_group_size: int = 2
    needs_values: bool = False
    needs_gold_answers: bool = False
    summary: str = ""

    def settings(self, section: Any) -> Any:
        """The params to compute with: the config section ``algo.<name>``, with presets resolved when the
        params class has ``resolved()``."""
        resolve = getattr(section, "resolved", None)
        return resolve() if resolve is not None else section


@functools.cache
def _discovered() -> dict[str, Estimator]:
    import t2po_cli.algo.estimators as package

    found: dict[str, Estimator] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):  # sorted: stable schema
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        spec = getattr(module, "ESTIMATOR", None)
        if isinstance(spec, Estimator):
            if spec.name in found:
                raise RuntimeError(f"two estimator modules declare the name {spec.name!r}")
            found[spec.name] = spec
    return found


def estimators() -> dict[str, Estimator]:
    """Every estimator, by name (sorted)."""
    return dict(_discovered())


def estimator_names() -> tuple[str, ...]:
    return tuple(estimators())


def get_estimator(name: str) -> Estimator:
    """The estimator ``name``.

    Raises:
        ConfigError: unknown name, listing the known ones.
    """
    known = estimators()
    if name not in known:
        raise ConfigError(f"algo.name={name!r} is not one of {', '.join(known)}; set algo.name=<one of them>")
    return known[name]
