"""Benchmark batch jobs against posting the same images one by one.

    python benchmarks/jobs.py                 # 1,000 photographed digits
    python benchmarks/jobs.py --images 200    # quicker

1. The embedded default (`make run`: gunicorn with its Celery worker beside it, SQLite
   broker and state): the photos posted one by one to /api/predict/mnist over one
   keep-alive connection, then the same photos as one job (a ZIP to /api/jobs, polled
   every 0.1 s until done). The goal: the job at >= 1.5x the images/s of one by one.
2. Redis with 2 workers on this machine (`make worker` twice, concurrency 1 each), the
   same job.

Reports images/s, the time to the first result and the total time (from the start of
the upload to the last answer). Prints a markdown table and writes it to
benchmarks/results/jobs-latest.md. Timings on a shared machine are indicative only.
"""

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.samples import labelled_digits, multipart, multipart_files, zip_bytes  # noqa: E402
from benchmarks.job_servers import REDIS_SERVER, celery_workers, redis_server  # noqa: E402
from benchmarks.live_server import live_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
POLL_SECONDS = 0.1
CHUNK = 50


def photo_chunk(start):
    return labelled_digits(CHUNK, photographed=True, start=start)[1]


def photographed_digits(count):
    """{name: JPEG bytes}: `count` different photographed digits (~0.1 s each, made on every core)."""
    with ProcessPoolExecutor() as pool:
        parts = list(pool.map(photo_chunk, range(0, count, CHUNK)))
    return dict(list({name: data for part in parts for name, data in part.items()}.items())[:count])


def connection(base_url):
    return http.client.HTTPConnection(urlsplit(base_url).netloc, timeout=300)


def request_json(client, method, path, body=None, content_type=None):
    client.request(method, path, body, {"Content-Type": content_type} if content_type else {})
    response = client.getresponse()
    data = json.loads(response.read())
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data}")
    return data


def one_by_one(base_url, photos, model):
    """(seconds to the first answer, total seconds): each photo its own request."""
    client = connection(base_url)
    started = time.perf_counter()
    first = None
    for data in photos.values():
        request_json(client, "POST", "/api/predict/mnist", *multipart(data, "photo.jpg", model=model))
        first = first or time.perf_counter() - started
    client.close()
    return first, time.perf_counter() - started


def as_a_job(base_url, photos, model):
    """(seconds to the first answer, total seconds): one ZIP, polled until done."""
    client = connection(base_url)
    body, content_type = multipart_files([("photos.zip", zip_bytes(photos))], model=model)
    started = time.perf_counter()
    job = request_json(client, "POST", "/api/jobs", body, content_type)
    first, after = None, 0
    while True:
        summary = request_json(client, "GET", f"{job['url']}?after={after}")  # only the new rows
        after = summary["after"]
        if summary["done"] and first is None:
            first = time.perf_counter() - started
        if summary["status"] in ("done", "failed"):
            break
        time.sleep(POLL_SECONDS)
    total = time.perf_counter() - started
    client.close()
    if summary["status"] != "done" or summary["done"] != len(photos):
        raise RuntimeError(f"the job ended {summary['status']} with {summary['done']} of {len(photos)}")
    return first, total


def wait_for_worker(base_url, photos, model):
    """A small job first: the worker's processes have loaded their models once it is done."""
    as_a_job(base_url, dict(list(photos.items())[:8]), model)


def row(name, count, first, total):
    return f"| {name} | {count / total:.0f} | {first:.2f} s | {total:.1f} s |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default="cnn", choices=("dense", "cnn"))
    parser.add_argument("--rounds", type=int, default=2, help="one by one, then the job, this many times")
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()

    photos = photographed_digits(args.images)
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="jobs-benchmark-"))
    (workdir / "embedded").mkdir()
    speedups = []
    with live_server(workdir / "embedded" / "uploads") as base_url:
        wait_for_worker(base_url, photos, args.model)
        for round_number in range(1, args.rounds + 1):  # alternated: a load spike from elsewhere hits both
            single = one_by_one(base_url, photos, args.model)
            rows.append(row(f"round {round_number}: one by one, /api/predict/mnist, 1 keep-alive client",
                            len(photos), *single))
            job = as_a_job(base_url, photos, args.model)
            rows.append(row(f"round {round_number}: one job, embedded default (SQLite broker, worker beside "
                            "gunicorn)", len(photos), *job))
            speedups.append(single[1] / job[1])
    if REDIS_SERVER and not args.skip_redis:
        folder = workdir / "redis"
        folder.mkdir()
        settings = {"JOB_FOLDER": folder / "jobs", "DATABASE_URL": f"sqlite:///{folder}/jobs.sqlite"}
        with redis_server(folder) as redis_url:
            settings["CELERY_BROKER_URL"] = redis_url
            with celery_workers(2, folder, **settings), \
                    live_server(folder / "uploads", JOB_EMBEDDED_WORKER=0, **settings) as base_url:
                wait_for_worker(base_url, photos, args.model)
                rows.append(row("one job, Redis, 2 workers on this machine", len(photos), *as_a_job(
                    base_url, photos, args.model)))

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    report = "\n".join([
        f"Jobs benchmark, {when}: {len(photos)} photographed digits (640x480 JPEG), model {args.model}, "
        f"{platform.node()} ({os.cpu_count()} cores, load average {load} at the end)",
        "",
        "| how | images/s | first result | total |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        "The job on the embedded default: " + ", ".join(f"{speedup:.2f}x" for speedup in speedups)
        + " the images/s of one by one, by round (goal: >= 1.5x).",
    ])
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jobs-latest.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
