import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # shared test helpers (analytic.py)
from stores import fresh_store  # noqa: E402
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "offline" / "mnist.npz").is_file():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """An isolated embedded MLflow store per test."""
    uri = fresh_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def resolve_tiny(raw: dict, tmp_path: Path):
    """Resolve a test's params dict with profile ``tiny`` whose data root is an empty folder in tmp_path
    (so every dataset is the labelled synthetic stand-in)."""
    import json

    from losstopo.config import resolve

    (tmp_path / "data" / "offline").mkdir(parents=True, exist_ok=True)
    raw = json.loads(json.dumps(raw))
    raw.setdefault("profiles", {}).setdefault("tiny", {}).setdefault("data", {})
    raw["profiles"]["tiny"]["data"].update(root=str(tmp_path / "data"), allow_synthetic=True)
    return resolve(raw)
