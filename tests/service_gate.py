"""The service-tier rule, importable by a unique name (several test folders have their own conftest.py).

Outside CI a missing service skips with a visible reason; in CI (``CI=true``) it is a failure, never a skip.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(available: bool, reason: str) -> None:
    """Skip with a visible reason outside CI; in CI a missing service is a failure, never a skip."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"service required in CI is missing: {reason}")
    pytest.skip(reason)


