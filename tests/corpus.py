"""The shared corpus of real messages (../shared/corpus), located next to the repository."""

import os
from pathlib import Path

import pytest

CORPUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def corpus_files() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*/*.eml"))


def require_corpus() -> None:
    if not corpus_files():
        message = f"the shared email corpus is missing at {CORPUS_DIR}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
