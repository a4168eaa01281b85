"""Shared test set-up: the reference implementation lives in tests/reference."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
