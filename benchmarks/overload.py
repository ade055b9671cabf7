"""A classroom at once: the production server under a mixed crowd, over real HTTP.

    python benchmarks/overload.py                  # 128 clients for 30 s
    python benchmarks/overload.py --clients 256 --duration 60

Starts gunicorn the `make run` way (benchmark.py's production_server) and runs, all at
once: half the clients sending Xception a 640x480 photo, half sending a digit drawn on
the home page's canvas (a 280x280 PNG; dense and cnn in turn), each on its own
keep-alive connection, as fast as answers come. A client told 503 with Retry-After
waits that long, as a well-behaved client does (so not every client has a request in
flight at every moment). Meanwhile /health and /ready are asked in turn every 100 ms,
each on a new connection, as a kubelet does. Reports, per route and answer status, the
count, p50, p99 and max latency; the probes' p50, p99 and max; and Xception's
throughput in images/s against one client sending one photo at a time to the same
server just before. Writes benchmarks/results/overload.md.

The load generator runs on the same machine as the server, as the clients of a small
class would share a 2-core machine with nothing else: its own CPU use counts against
the server's. Nothing is downloaded; Xception's weights as in benchmark.py.
"""

import argparse
import http.client
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.benchmark import (RESULTS, as_sent, canvas_png, percentile_ms, photo_jpeg, production_server,  # noqa: E402
                                  publish, upload, xception_weights)

PROBE_EVERY = 0.1
SINGLE_XCEPTION_REQUESTS = 20


class Connection:
    """One keep-alive connection; send() returns (status, seconds, Retry-After or None)."""

    def __init__(self, port):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, method, path, body=None, headers=None, retry=True):
        sent = as_sent(method, path, body, headers or {})
        started = time.perf_counter()
        try:
            self.connection.request(*sent)
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()  # reconnects on the next request
            if retry and isinstance(exc, (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected)):
                # The server closed a connection left idle past its keep-alive (5 s), as after a
                # long Retry-After: a client opens a new one, and so does this one, once.
                return self.send(method, path, body, headers, retry=False)
            return type(exc).__name__, time.perf_counter() - started, None
        retry_after = response.getheader("Retry-After")
        return response.status, time.perf_counter() - started, int(retry_after) if retry_after else None


def requests():
    """{route name: (path, body, headers)} of the two kinds of clients' requests."""
    photo = upload("photo.jpg", photo_jpeg())
    return {
        "xception (640x480 photo)": [("/api/predict/xception", *photo)],
        "digit (canvas PNG, dense and cnn in turn)": [
            ("/api/predict/mnist", *upload("digit.png", canvas_png(), model=model)) for model in ("dense", "cnn")],
    }


def single_client_xception_rate(port, request):
    """Images/s of one client sending one photo at a time (after two warm-up requests)."""
    connection = Connection(port)
    path, body, headers = request
    for _ in range(2):
        connection.send("POST", path, body, headers)
    started = time.perf_counter()
    for _ in range(SINGLE_XCEPTION_REQUESTS):
        status, _, _ = connection.send("POST", path, body, headers)
        assert status == 200, f"Xception answered {status} before the load"
    return SINGLE_XCEPTION_REQUESTS / (time.perf_counter() - started)


def crowd(port, routes, clients, duration):
    """Run the crowd and the /health prober for `duration` s: (per-route results, probe results, elapsed)."""
    results = {name: {"seconds": [], "statuses": Counter()} for name in routes}
    probes = {path: {"seconds": [], "statuses": Counter()} for path in ("/health", "/ready")}
    names = [name for _ in range(clients // len(routes)) for name in routes]
    start = threading.Barrier(len(names) + 2)
    deadline = []

    def client(name, offset):
        connection = Connection(port)
        cycle = routes[name]
        start.wait()
        sent = offset
        while time.perf_counter() < deadline[0]:
            path, body, headers = cycle[sent % len(cycle)]
            sent += 1
            status, seconds, retry_after = connection.send("POST", path, body, headers)
            results[name]["seconds"].append(seconds)
            results[name]["statuses"][status] += 1
            results[name].setdefault(status, []).append(seconds)
            if status == 503 and retry_after:
                time.sleep(max(0.0, min(retry_after, deadline[0] - time.perf_counter())))

    def prober():
        start.wait()
        sent = 0
        while time.perf_counter() < deadline[0]:
            path = ("/health", "/ready")[sent % 2]
            sent += 1
            connection = Connection(port)  # a new connection each time, as a kubelet's probe
            status, seconds, _ = connection.send("GET", path)
            connection.connection.close()
            probes[path]["seconds"].append(seconds)
            probes[path]["statuses"][status] += 1
            probes[path].setdefault(status, []).append(seconds)
            time.sleep(max(0.0, PROBE_EVERY - seconds))

    threads = [threading.Thread(target=client, args=(name, i)) for i, name in enumerate(names)]
    threads.append(threading.Thread(target=prober))
    for thread in threads:
        thread.start()
    deadline.append(time.perf_counter() + duration)
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return results, probes, time.perf_counter() - began


def row(name, seconds):
    return (f"| {name} | {len(seconds)} | {percentile_ms(seconds, 50):.1f} | {percentile_ms(seconds, 99):.1f} | "
            f"{max(seconds) * 1000 if seconds else float('nan'):.1f} |")


def rows(name, result):
    """One row per answer status (a quick 503 must not flatter the 200s' latency)."""
    return [row(f"{name}: {status}", result[status]) for status in sorted(result["statuses"], key=str)]


def report(args, weights, single_rate, results, probes, elapsed, load):
    xception = next(name for name in results if name.startswith("xception"))
    answered = results[xception]["statuses"][200]
    rate = answered / elapsed
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    threads = os.environ.get("GUNICORN_THREADS", "32")
    return "\n".join([
        f"# Overload, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, gunicorn {workers} "
        f"workers x {threads} threads, Xception weights: {weights}. {args.clients} clients for {elapsed:.0f} s "
        f"(half Xception, half digits), /health and /ready in turn every {PROBE_EVERY * 1000:.0f} ms. "
        f"Load average before/after: {load[0]:.2f} / {load[1]:.2f}.",
        "",
        "| route: answer | requests | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        *(line for name, result in results.items() for line in rows(name, result)),
        *(line for path, result in probes.items() for line in rows(f"GET {path} (probe, new connection)", result)),
        "",
        f"Xception: {rate:.1f} images/s answered under the crowd, against {single_rate:.1f} images/s for one "
        f"client sending one photo at a time ({rate / single_rate:.2f}x).",
        "",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--clients", type=int, default=128)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "overload.md")
    args = parser.parse_args(argv)
    weights, weights_name = xception_weights()
    routes = requests()
    with tempfile.TemporaryDirectory() as workdir, production_server(
            Path(workdir), XCEPTION_WEIGHTS=weights, XCEPTION_EAGER=1) as server:
        server.wait_until_warm()
        xception_request = routes[next(iter(routes))][0]
        single_rate = single_client_xception_rate(server.port, xception_request)
        load_before = os.getloadavg()[0]
        results, probes, elapsed = crowd(server.port, routes, args.clients, args.duration)
        load_after = os.getloadavg()[0]
    publish(report(args, weights_name, single_rate, results, probes, elapsed, (load_before, load_after)), args.out)


if __name__ == "__main__":
    main()
