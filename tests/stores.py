"""Empty MLflow stores for tests: creating a sqlite store runs MLflow's schema migrations (~2.5 s a store on the
2-core AVX2 EPYC), so the tests copy one store migrated once per session instead."""

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _migrated_store() -> Path:
    import mlflow

    directory = Path(tempfile.mkdtemp(prefix="losstopo-store-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{directory / 'mlflow.db'}").search_experiments()
    return directory / "mlflow.db"


def fresh_store(directory: Path) -> str:
    """The URI of a new, empty MLflow store ``directory/mlflow.db``: every table made, no run logged."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_store(), directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"
