"""Fixtures of the sweeper and launcher tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_apps import App


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)
