"""Slow clients ("slowloris") against the production server: while many clients trickle
their requests a byte at a time, do /health and a digit request still answer quickly?

    python benchmarks/slow_clients.py                      # 64 slow clients for 20 s
    python benchmarks/slow_clients.py --clients 256 --seconds 60 --byte-every 2

Starts gunicorn with gunicorn.conf.py as `make run` does, on a free loopback port, and
stops it afterwards; nothing else is contacted. The slow clients come in three kinds,
in turn: one connects and sends nothing, one trickles its request line and headers,
one sends its headers at once and trickles a 100 KB upload. Each sends one byte every
--byte-every seconds; one the server closes or answers connects again at once.
Meanwhile GET /health and POST /api/predict/mnist (a 28x28 PNG) are each sent every
100 ms, on a new connection each time. Goal: every probe answered within 1 s.
Exits with status 1 when the goal is missed.
"""

import argparse
import http.client
import io
import select
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.samples import multipart  # noqa: E402
from benchmarks.live_server import live_server  # noqa: E402
from train_mnist import load_mnist_idx  # noqa: E402

GOAL_SECONDS = 1.0
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 10.0  # a probe slower than this counts as failed


"""
## Slow clients
"""


def slow_payloads():
    """kind -> (bytes sent at once on connecting, bytes then trickled one at a time)."""
    head = "POST /api/predict/mnist HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    body_head = (head + "Content-Type: multipart/form-data; boundary=slow\r\n"
                 "Content-Length: 100000\r\n\r\n").encode()
    return {
        "idle": (b"", b""),
        "slow headers": (b"", (head + "X-Slow: " + "s" * 10_000).encode()),
        "slow body": (body_head, b"--slow\r\n" + b"b" * 99_992),
    }


class SlowClient:
    """One connection that sends its request one byte at a time, and reconnects when dropped."""

    def __init__(self, port, kind, payload):
        self.port, self.kind = port, kind
        self.at_once, self.trickle = payload
        self.sock, self.sent = None, 0
        self.connections = self.closed_by_server = self.answered = 0

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.sendall(self.at_once)
        self.sock.setblocking(False)
        self.sent = 0
        self.connections += 1

    def send_one_byte(self):
        if self.sent < len(self.trickle):
            try:
                self.sent += self.sock.send(self.trickle[self.sent:self.sent + 1])
            except BlockingIOError:
                pass  # the server is not reading: fine, we are slow anyway
            except OSError:
                self.reconnect()

    def server_spoke(self):
        """The server answered or closed the connection: count it and start over."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answered += 1
        else:
            self.closed_by_server += 1
        self.reconnect()

    def reconnect(self):
        self.close()
        try:
            self.connect()
        except OSError:
            self.sock = None  # tried again on the next tick

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SlowClients(threading.Thread):
    """`count` slow clients, each sending a byte every `byte_every` seconds, until stopped."""

    def __init__(self, port, count, byte_every):
        super().__init__(daemon=True)
        kinds = list(slow_payloads().items())
        self.clients = [SlowClient(port, *kinds[i % len(kinds)]) for i in range(count)]
        self.byte_every = byte_every
        self.stopping = threading.Event()
        self.open_counts = []  # connections open at each tick

    def run(self):
        for client in self.clients:
            client.reconnect()
        while not self.stopping.wait(self.byte_every):
            for client in self.clients:
                if client.sock is None:
                    client.reconnect()
            open_clients = [c for c in self.clients if c.sock is not None]
            readable, _, _ = select.select([c.sock for c in open_clients], [], [], 0)
            for client in open_clients:
                if client.sock in readable:
                    client.server_spoke()
                elif client.sock is not None:
                    client.send_one_byte()
            self.open_counts.append(sum(c.sock is not None for c in self.clients))

    def stop(self):
        self.stopping.set()
        self.join()
        for client in self.clients:
            client.close()

    def summary(self):
        by_kind = {}
        for client in self.clients:
            total = by_kind.setdefault(client.kind, {"clients": 0, "connections": 0, "closed_by_server": 0,
                                                     "answered": 0})
            total["clients"] += 1
            total["connections"] += client.connections
            total["closed_by_server"] += client.closed_by_server
            total["answered"] += client.answered
        return by_kind


"""
## Probes
"""


def digit_upload():
    """(body, headers) of POST /api/predict/mnist with a real MNIST test digit as a 28x28 PNG."""
    _, (images, _) = load_mnist_idx(ROOT / "tests" / "fixtures" / "mnist")
    png = io.BytesIO()
    Image.fromarray(images[0]).save(png, "PNG")
    body, content_type = multipart(png.getvalue(), "digit.png")
    return body, {"Content-Type": content_type}


def probe_requests():
    """name -> (method, path, body, headers)."""
    return {
        "GET /health": ("GET", "/health", None, {}),
        "POST /api/predict/mnist": ("POST", "/api/predict/mnist", *digit_upload()),
    }


def send_once(port, request):
    """Seconds until a complete 200 answer on a new connection, or None when it failed or timed out."""
    method, path, body, headers = request
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    started = time.perf_counter()
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        response.read()
        return time.perf_counter() - started if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def probe(port, request, until, results):
    """Send `request` every PROBE_EVERY seconds until `until`, appending each outcome to `results`."""
    next_at = time.monotonic()
    while next_at < until:
        results.append(send_once(port, request))
        next_at += PROBE_EVERY
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic())  # a slow probe is not followed by a burst


"""
## Run
"""


def measure(port, clients=64, seconds=20.0, byte_every=1.0, settle=2.0):
    """Probe outcomes ({name: [seconds or None]}) while `clients` slow clients are connected,
    after `settle` seconds for them to connect; and the slow clients' summary."""
    slow = SlowClients(port, clients, byte_every)
    slow.start()
    try:
        time.sleep(settle)
        until = time.monotonic() + seconds
        results = {name: [] for name in probe_requests()}
        threads = [threading.Thread(target=probe, args=(port, request, until, results[name]))
                   for name, request in probe_requests().items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        slow.stop()
    return results, slow


def statistics(outcomes):
    """count, failed, p50/p99/max in ms of the answered ones, and whether all met the goal."""
    answered = np.array([s for s in outcomes if s is not None]) * 1000
    stats = {"count": len(outcomes), "failed": len(outcomes) - len(answered)}
    for name, q in (("p50", 50), ("p99", 99), ("max", 100)):
        stats[name] = float(np.percentile(answered, q)) if len(answered) else float("nan")
    stats["met"] = stats["failed"] == 0 and stats["max"] <= GOAL_SECONDS * 1000
    return stats


def report(results, slow, args):
    lines = [f"{args.clients} slow clients (a byte every {args.byte_every:g} s) for {args.seconds:g} s; "
             f"probes every {PROBE_EVERY * 1000:.0f} ms, each on a new connection; goal: all within "
             f"{GOAL_SECONDS:g} s", "",
             "| probe | sent | failed | p50 ms | p99 ms | max ms | goal met |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, outcomes in results.items():
        s = statistics(outcomes)
        lines.append(f"| `{name}` | {s['count']} | {s['failed']} | {s['p50']:.1f} | {s['p99']:.1f} | "
                     f"{s['max']:.1f} | {'yes' if s['met'] else 'NO'} |")
    lines += ["", "| slow clients | clients | connections | closed by the server | answered |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for kind, total in slow.summary().items():
        lines.append(f"| {kind} | {total['clients']} | {total['connections']} | {total['closed_by_server']} | "
                     f"{total['answered']} |")
    counts = slow.open_counts or [0]
    lines.append(f"\nSlow connections open during the run: min {min(counts)}, max {max(counts)}.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--byte-every", type=float, default=1.0, help="seconds between a slow client's bytes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        with live_server(Path(workdir) / "uploads") as base_url:
            port = int(base_url.rsplit(":", 1)[1])
            results, slow = measure(port, args.clients, args.seconds, args.byte_every)
    print(report(results, slow, args))
    return 0 if all(statistics(outcomes)["met"] for outcomes in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
