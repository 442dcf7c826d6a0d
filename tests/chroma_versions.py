"""A second Chroma version for tests and benchmarks: chromadb 1.5.8 in its own venv
(``make chroma-venvs`` builds it; ``make test`` does first)."""

from __future__ import annotations

from pathlib import Path

import pytest

SECOND_VERSION = "1.5.8"
SECOND_PYTHON = Path(__file__).parent.parent / ".venvs" / f"chroma-{SECOND_VERSION}" / "bin/python"
"""The interpreter that has chromadb 1.5.8 (its Rust bindings) installed."""


def second_chroma_python() -> Path:
    """``SECOND_PYTHON``; the test skips (CI: fails) when it is not built."""
    if not SECOND_PYTHON.exists():
        pytest.skip(f"no Chroma {SECOND_VERSION} at {SECOND_PYTHON}: run `make chroma-venvs`")
    return SECOND_PYTHON


@pytest.fixture
def second_chroma() -> Path:
    """The interpreter of the second Chroma version (see ``second_chroma_python``)."""
    return second_chroma_python()
