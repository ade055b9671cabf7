"""Start what distributed jobs need, for the tests and the benchmark: a throwaway
redis-server and `celery worker` processes, the way `make worker` starts them."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.live_server import ROOT, free_port

REDIS_SERVER = shutil.which("redis-server")


@contextmanager
def redis_server(folder):
    """Yield redis://127.0.0.1:PORT/0 of a new redis-server that keeps nothing on disk."""
    port = free_port()
    log = open(Path(folder) / f"redis-{port}.log", "w")
    process = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: see {log.name}")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


class Worker:
    """One `celery -A make_celery worker`, in its own process group (it and its pool processes)."""

    def __init__(self, name, log_path, environment, concurrency=1):
        self.name, self.log_path = name, Path(log_path)
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "make_celery", "worker", "--loglevel", "INFO",
             "--concurrency", str(concurrency), "--hostname", f"{name}@%h"],
            cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while " ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker {self.name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def kill(self):
        """SIGKILL: the worker and its pool processes, with no chance to hand anything back."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextmanager
def celery_workers(count, folder, concurrency=1, **env):
    """Yield `count` started Workers; environment variables as live_server takes them."""
    environment = {**os.environ, **{key: str(value) for key, value in env.items()}}
    workers = [Worker(f"worker{index}", Path(folder) / f"worker{index}.log", environment, concurrency)
               for index in range(count)]
    try:
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
