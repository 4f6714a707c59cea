"""Value checks that raise ``ConfigError`` with one line naming the key and the fix (ground floor).

Shared by ``config.validate`` and by the settings dataclasses that live next to what they configure
(estimator params in ``algo/estimators/``, the env section in ``envs/base.py``, the T2PO switches in
``hooks/settings.py``), so each of them validates its own fields with the same wording.
"""

from __future__ import annotations

from collections.abc import Iterable

from t2po_cli.errors import ConfigError


def choice(value: object, choices: Iterable[str], key: str) -> None:
    """``value`` must be one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(options)}; set {key}=<one of them>")


def in_range(value: float, lo: float, hi: float, key: str, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """``value`` must lie in [lo, hi] (a bound is excluded when ``lo_open``/``hi_open``)."""
    bad = value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi)
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ConfigError(f"{key}={value} is out of range {lb}{lo}, {hi}{rb}; pick a value inside it")


def positive(value: int | float, key: str, *, allow_zero: bool = False) -> None:
    """``value`` must be > 0 (or >= 0 with ``allow_zero``)."""
    if value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} must be {need}")
