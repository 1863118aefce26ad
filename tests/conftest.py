"""Marks every test with its kind, from the folder it lives in, so
``pytest -m unit`` (``make test-fast``) or ``-m "not db"`` select by kind."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
KIND_BY_FOLDER = {
    "unit": ("unit",),
    "store": ("unit",),  # the conformance suite: in-process stores (a database store adds "db")
    "integration": ("integration",),
    "client": ("integration",),
    "e2e": ("e2e",),
    "worker": ("e2e",),
    "bench": ("e2e",),
    "browser": ("e2e", "browser"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(item.path).relative_to(TESTS).parts[0]
        for kind in KIND_BY_FOLDER[folder]:
            item.add_marker(kind)
