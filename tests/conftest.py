"""Shared fixtures. Models load once per test session; each test gets a fresh app
with its own temporary upload folder. Nothing here touches the network."""

import pytest

from app import create_app
from app.models import ModelRegistry
from helpers import FIXTURES, ROOT, folder_files


@pytest.fixture(scope="session")
def mnist_sample():
    """500 real MNIST test digits and their labels, from the committed fixture."""
    from train_mnist import load_mnist_idx

    _, (images, labels) = load_mnist_idx(FIXTURES / "mnist")
    return images, labels


@pytest.fixture(scope="session")
def missing_weights(tmp_path_factory):
    """A weights path that does not exist: Xception answers 503, never downloads."""
    return str(tmp_path_factory.mktemp("no-weights") / "xception.weights.h5")


@pytest.fixture(scope="session")
def registry(missing_weights):
    """The shipped digit models, loaded once for the whole session."""
    return ModelRegistry(ROOT / "models", xception_weights=missing_weights)


@pytest.fixture
def app(tmp_path, registry, missing_weights):
    app = create_app({
        "TESTING": True,
        "UPLOAD_FOLDER": str(tmp_path / "uploads"),
        "XCEPTION_WEIGHTS": missing_weights,
        # Jobs: their state beside the uploads, and tasks run in the request (Celery's eager
        # mode); tests/test_jobs_workers.py runs real workers.
        "JOB_FOLDER": str(tmp_path / "jobs"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/jobs.sqlite",
        "CELERY_BROKER_URL": f"jobsqlite+sqlite:///{tmp_path}/broker.sqlite",
        "CELERY": {"task_always_eager": True, "task_eager_propagates": True},
    })
    app.extensions["models"] = registry  # share the loaded models across tests
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def uploads(app):
    """The files in this test's upload folder, by name, all but the quota's ledger."""
    def stored():
        return folder_files(app.config["UPLOAD_FOLDER"])
    return stored
