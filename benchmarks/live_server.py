"""Start the production server (gunicorn, the committed config) the way `make run`
does, on a free port with a temporary upload folder: for the benchmarks, and for the
tests that need real HTTP."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(upload_folder, startup_timeout=120, **env):
    """Yield the base URL of a running gunicorn; stop it afterwards.

    Extra keyword arguments become environment variables (XCEPTION_WEIGHTS=...).
    """
    port = free_port()
    beside = Path(upload_folder).parent  # job state and broker too, never the project's instance/
    environment = {**os.environ, "PORT": str(port), "UPLOAD_FOLDER": str(upload_folder),
                   "XCEPTION_WEIGHTS": str(beside / "no-weights.h5"),
                   "JOB_FOLDER": str(beside / "jobs"), "DATABASE_URL": f"sqlite:///{beside}/jobs.sqlite",
                   **{k: str(v) for k, v in env.items()}}
    if "CELERY_BROKER_URL" not in env:
        environment["CELERY_BROKER_URL"] = f"jobsqlite+sqlite:///{beside}/broker.sqlite"
        environment.setdefault("JOB_EMBEDDED_WORKER", "1")
    log = open(Path(upload_folder).parent / f"gunicorn-{port}.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                    if response.status == 200 and all_workers_warm(log, int(environment.get("WEB_CONCURRENCY", "2"))):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer /health within {startup_timeout} s")
            time.sleep(0.5)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: don't wait out the graceful timeout
            process.kill()
            process.wait()
        log.close()


def all_workers_warm(log, workers):
    """True once every one of the `workers` has logged that its models are warm."""
    log.flush()
    log.seek(0)
    warm = log.read().count("models warm")
    log.seek(0, os.SEEK_END)
    return warm >= workers
