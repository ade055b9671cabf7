"""gunicorn settings for `make run`, sized for a 2-core machine.

Each worker is its own process with its own copy of the models (TensorFlow is not
fork-safe, so they load after the fork: no `preload_app`). Inside a worker, threads
overlap the image decoding of several requests while model calls take turns under a
lock, and TensorFlow spreads each call over all cores. The worker is gunicorn's
threaded one, except that its event loop reads each whole request before a thread
sees it (buffering_worker.py): slow clients cost a socket, not a thread.

Bigger machine: workers = number of cores / 2 (each worker's TensorFlow already
uses several cores), threads 4-8, and up to 1.4 GB of memory (RSS) per worker with
Xception loaded, after big images. See README "Serving" and "Scaling past one machine".
"""

import os
import signal
import subprocess
import sys

from buffering_worker import BufferingThreadWorker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow start-up chatter stays out of the log

port = os.environ.get("PORT", "5000")
bind = f"127.0.0.1:{port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = BufferingThreadWorker
# Enough threads that Xception's requests, which each model's limit caps at 8 a worker
# (app/models.py DEFAULT_QUEUES), can never hold them all: digits and pages always find
# one. A thread waiting for a model costs no CPU; /health and /ready have threads of
# their own (buffering_worker.py).
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Recycle each worker after 10,000 to 15,000 requests: big images leave a worker at its
# memory high-water mark (glibc keeps what it freed: ~1.1 GB RSS, 1.4 GB with Xception),
# and a fresh worker starts at ~0.57 GB (0.75). The old worker finishes its requests while
# the new one loads its models (~3 s on an idle machine) and the other worker serves. The
# random jitter makes it unlikely that both restart at once; at 250 requests/s per worker,
# a worker restarts every minute or so. GUNICORN_CMD_ARGS="--max-requests 0" turns it off.
max_requests = 10_000
max_requests_jitter = 5_000
# Xception's first load (88 MB of weights, maybe a download) can take a while;
# an Xception request itself takes ~0.1 s on 2 cores, a digit ~2 ms.
timeout = 120
graceful_timeout = 30
keepalive = 5
# Request line and header limits: defaults are generous; uploads are capped by the
# app's MAX_CONTENT_LENGTH, which answers 413.
limit_request_line = 4094
limit_request_fields = 50

# Each instance gets its own control socket (for `gunicornc`), named by its port; the
# default (~/.gunicorn/gunicorn.ctl) is shared, and a second instance takes it over.
_runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
if not os.path.isdir(_runtime_dir):
    _runtime_dir = os.path.expanduser("~/.gunicorn")
control_socket = os.path.join(_runtime_dir, f"digits-{port}.ctl")

accesslog = "-"
# gunicorn's usual line, then how long the request took from its head being parsed (the
# whole request is in by then: a slow arrival has its own log line) to the answer sent.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
errorlog = "-"
loglevel = "info"
capture_output = True  # the app's own log lines go to stdout too


def embedded_jobs_worker_wanted():
    """The job worker runs beside gunicorn when the broker is the embedded default (no
    CELERY_BROKER_URL), unless JOB_EMBEDDED_WORKER=0; JOB_EMBEDDED_WORKER=1 starts it
    with any broker. With Redis, workers usually run elsewhere: `make worker`."""
    wanted = os.environ.get("JOB_EMBEDDED_WORKER", "")
    if wanted:
        return wanted.lower() in ("1", "true", "yes")
    return not os.environ.get("CELERY_BROKER_URL")


def on_starting(server):
    """Before any worker: remove uploads left half-written when the server last stopped,
    and start the jobs' Celery worker (app/jobs/embedded_worker.py), once, in the master."""
    from app import create_app

    server.upload_folder = create_app().extensions["uploads"]
    removed = server.upload_folder.remove_incoming()
    if removed:
        server.log.info("removed %d half-written upload(s) left by an earlier run", removed)
    if embedded_jobs_worker_wanted():
        server.jobs_worker = subprocess.Popen([sys.executable, "-m", "app.jobs.embedded_worker"],
                                              cwd=os.path.dirname(os.path.abspath(__file__)))
        server.log.info("jobs: embedded Celery worker supervisor started (pid %s)", server.jobs_worker.pid)


def on_exit(server):
    """Stop the jobs' worker: it finishes its running tasks first (a warm shutdown)."""
    supervisor = getattr(server, "jobs_worker", None)
    if supervisor is not None and supervisor.poll() is None:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(40)
        except subprocess.TimeoutExpired:
            supervisor.kill()


def child_exit(server, worker):
    """A worker has exited: remove what it was writing when it died (SIGKILL, out of memory, timeout)."""
    removed = server.upload_folder.remove_incoming(pid=worker.pid)
    if removed:
        server.log.warning("worker %s died writing %d upload(s); removed them", worker.pid, removed)


def post_worker_init(worker):
    """Load and trace every model in this worker before it takes requests."""
    app = worker.wsgi  # the Flask app created by "app:create_app()" in this worker
    if app.config["MAX_CONTENT_LENGTH"] is not None:
        worker.max_body = app.config["MAX_CONTENT_LENGTH"]  # read ahead no more than the app accepts
    worker.probe_paths = ("/health", "/ready")  # answered by threads of their own
    registry = app.extensions["models"]
    registry.warm_up(xception=app.config["XCEPTION_EAGER"])
    worker.log.info("worker %s: models warm: %s", worker.pid, registry.health())

# Everything to stdout: gunicorn's own lines, the access log, and the app's
# (rejected uploads with their reason, model loading) at INFO.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}
