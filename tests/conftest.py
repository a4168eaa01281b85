"""Shared test set-up: the reference implementation lives in tests/reference; tests marked
`slow` (minutes of real-model CPU time) run only with BYTECOVER_SLOW=1."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BYTECOVER_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow real-model test; set BYTECOVER_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
