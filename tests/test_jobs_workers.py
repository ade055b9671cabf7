"""Jobs on real Celery workers, killed mid-job with SIGKILL: every file's answer must
still be recorded, exactly once, and be the single-image API's answer.

- Redis (the many-machines layout): redis-server on a free port, two `celery worker`
  processes and the app under gunicorn. The killed worker's unacknowledged tasks go
  back to Redis after the visibility timeout (JOB_REDELIVERY_SECONDS) and the other
  worker runs them.
- The embedded default: gunicorn with its own worker beside it (SQLite broker).
  The supervisor restarts the killed worker, which queues the unanswered files again.
"""

import http.client
import json
import os
import re
import signal
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from app.samples import labelled_digits, multipart, multipart_files, zip_bytes
from benchmarks.job_servers import REDIS_SERVER, celery_workers, redis_server
from benchmarks.live_server import live_server

pytestmark = pytest.mark.slow

FILES = 60
BATCH = 3  # 20 tasks: a job long enough to be killed in the middle of
RECEIVED = re.compile(r"Task jobs\.recognise_batch\[([\w-]+)\] received")
SUCCEEDED = re.compile(r"Task jobs\.recognise_batch\[([\w-]+)\] succeeded")


@pytest.fixture(scope="module")
def job_files():
    return labelled_digits(FILES)[1]


def common_settings(folder):
    """One web worker (the tests need a server, not throughput) and the job state in `folder`."""
    return {"JOB_FOLDER": folder / "jobs", "DATABASE_URL": f"sqlite:///{folder}/jobs.sqlite",
            "JOB_BATCH_SIZE": BATCH, "WEB_CONCURRENCY": 1, "XCEPTION_WEIGHTS": folder / "no-weights.h5"}


@contextmanager
def connected(base_url):
    client = Client(base_url)
    try:
        yield client
    finally:
        client.close()


class Client:
    """One keep-alive HTTP connection to the server."""

    def __init__(self, base_url):
        self.connection = http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=60)

    def request(self, method, path, body=None, content_type=None):
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closes a connection idle for its keep-alive time (5 s), as while we
            # watched the worker's log: once more, on a new connection.
            self.connection.close()
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
        return response.status, response.read()

    def close(self):
        self.connection.close()

    def json(self, method, path, body=None, content_type=None):
        status, data = self.request(method, path, body, content_type)
        return status, json.loads(data)


def submit(client, files):
    status, job = client.json("POST", "/api/jobs", *multipart_files([("digits.zip", zip_bytes(files))], model="cnn"))
    assert status == 202, job
    return job


def in_flight(log):
    """Ids of the tasks the worker received and had not finished."""
    return set(RECEIVED.findall(log)) - set(SUCCEEDED.findall(log))


def kill_mid_job(read_log, kill, timeout=90):
    """Kill the worker once it has finished a task and holds another; returns the ids
    of the tasks it held when it died."""
    deadline = time.monotonic() + timeout
    while True:
        log = read_log()
        if SUCCEEDED.search(log) and in_flight(log):
            kill()
            return in_flight(read_log())
        assert time.monotonic() < deadline, "the worker never took a task"
        time.sleep(0.02)


def wait_done(client, job, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        status, summary = client.json("GET", job["url"])
        assert status == 200
        if summary["status"] in ("done", "failed"):
            return summary
        assert time.monotonic() < deadline, f"the job did not finish: {summary['done']} of {summary['total']}"
        time.sleep(0.25)


def wait_redelivered(held, read_log, timeout=60):
    """Wait until the survivor has run every task the killed worker held. The job can be
    done before then: a worker killed after recording a task's answers but before logging
    and acknowledging it leaves work done and a task Redis still redelivers, after the
    visibility timeout, to a survivor that finds nothing left to do."""
    deadline = time.monotonic() + timeout
    while not held <= set(SUCCEEDED.findall(read_log())):
        assert time.monotonic() < deadline, f"never redelivered: {held - set(SUCCEEDED.findall(read_log()))}"
        time.sleep(0.25)


def check_every_answer_once(client, job, summary, files):
    """Each file once, in the JSON and the CSV, with /api/predict/mnist's answer."""
    assert (summary["status"], summary["done"], summary["failed"]) == ("done", FILES, 0)
    names = [row["file"] for row in summary["results"]]
    assert sorted(names) == sorted(files)  # each exactly once
    status, csv_body = client.request("GET", f"{job['url']}/results.csv")
    assert status == 200 and len(csv_body.decode().splitlines()) == FILES + 1
    for row in summary["results"]:
        status, single = client.json("POST", "/api/predict/mnist", *multipart(files[row["file"]], model="cnn"))
        assert status == 200 and row["prediction"] == str(single["prediction"]), row


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server; "
                                                  ".ci/run installs it, so CI runs this test)")
def test_redis_a_worker_killed_mid_job_loses_nothing(tmp_path, job_files):
    settings = common_settings(tmp_path)
    with redis_server(tmp_path) as redis_url:
        settings.update(CELERY_BROKER_URL=redis_url, JOB_REDELIVERY_SECONDS=4)
        with celery_workers(2, tmp_path, **settings) as (doomed, survivor), \
                live_server(tmp_path / "uploads", JOB_EMBEDDED_WORKER=0, **settings) as base_url, \
                connected(base_url) as client:
            job = submit(client, job_files)
            held = kill_mid_job(doomed.log, doomed.kill)
            assert held, "the worker died holding no task: nothing was tested"
            summary = wait_done(client, job)
            # Redelivered by Redis, not sent anew: the same task ids ran on the survivor.
            wait_redelivered(held, survivor.log)
            check_every_answer_once(client, job, summary, job_files)


def test_embedded_a_worker_killed_mid_job_loses_nothing(tmp_path, job_files):
    settings = common_settings(tmp_path)
    with live_server(tmp_path / "uploads", JOB_WORKER_CONCURRENCY=1, **settings) as base_url:
        log_path = tmp_path / f"gunicorn-{urlsplit(base_url).port}.log"

        def log():
            return log_path.read_text(errors="replace")

        def kill_worker():
            pid = int(re.findall(r"started the Celery worker \(pid (\d+)", log())[-1])
            os.killpg(pid, signal.SIGKILL)

        deadline = time.monotonic() + 120
        while " ready." not in log():
            assert time.monotonic() < deadline, "the embedded worker did not start"
            time.sleep(0.2)
        with connected(base_url) as client:
            job = submit(client, job_files)
            held = kill_mid_job(log, kill_worker)
            assert held, "the worker died holding no task: nothing was tested"
            summary = wait_done(client, job)
            assert "restarting it in" in log()
            check_every_answer_once(client, job, summary, job_files)
