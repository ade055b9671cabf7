"""The embedded default's Celery worker: started beside gunicorn by gunicorn.conf.py,
restarted when it dies, stopped with gunicorn.

    python -m app.jobs.embedded_worker   # what gunicorn.conf.py runs; `make worker` is the plain worker

The worker runs in its own process group, so that stopping it stops its pool
processes too. When gunicorn goes away without stopping us (SIGKILL), so does the
worker. A worker that dies soon after it started is restarted after a growing pause
(up to a minute), so that a broken setting does not spin the CPU.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STOP_SECONDS = 30  # a warm shutdown finishes the running tasks; then it is killed
HEALTHY_SECONDS = 30  # a worker that lived this long restarts at once

log = logging.getLogger("embedded-worker")


def worker_command(concurrency):
    return [sys.executable, "-m", "celery", "-A", "make_celery", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency), "--hostname", f"embedded-{os.getpid()}@%h"]


def stop(worker):
    if worker.poll() is not None:
        return
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def supervise(concurrency):
    parent = os.getppid()
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    pause = 1
    while not stopping:
        started = time.monotonic()
        worker = subprocess.Popen(worker_command(concurrency), cwd=ROOT, start_new_session=True)
        log.info("started the Celery worker (pid %d, %d processes)", worker.pid, concurrency)
        while worker.poll() is None and not stopping and os.getppid() == parent:
            time.sleep(0.5)
        if stopping or os.getppid() != parent:
            stop(worker)
            return
        lived = time.monotonic() - started
        pause = 1 if lived > HEALTHY_SECONDS else min(pause * 2, 60)
        log.warning("the Celery worker exited with %s after %.0f s; restarting it in %d s",
                    worker.returncode, lived, pause)
        time.sleep(pause)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    supervise(int(os.environ.get("JOB_WORKER_CONCURRENCY") or os.cpu_count() or 1))
