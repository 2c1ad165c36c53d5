"""Shared fixtures: the ../shared folder (skips cleanly when absent) and the class table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tiny_models

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def shared_path() -> Path:
    """Where ../shared is: $EDGESEG_SHARED or the folder beside the repository."""
    return Path(os.environ.get("EDGESEG_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder; skips the test with the reason when it is absent."""
    path = shared_path()
    if not (path / "data").is_dir():
        pytest.skip(f"needs ../shared (real data and weights) at {path}; set EDGESEG_SHARED")
    return path


@pytest.fixture(scope="session")
def dubai_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "dubai_aerial"


@pytest.fixture(scope="session")
def dubai_classes() -> Path:
    return EXAMPLES / "dubai_classes.csv"


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny ONNX / OpenVINO segmentation models (built once for the whole session)."""
    return tiny_models.onnx_models(tmp_path_factory)


@pytest.fixture(scope="session")
def tflite(tmp_path_factory):
    """The tiny model as TFLite (one TensorFlow conversion for the whole session)."""
    return tiny_models.tflite_model(tmp_path_factory)
