"""Benchmark the production server over real HTTP: latency, throughput, memory, start-up.

    make benchmark                       # or: python benchmarks/benchmark.py
    python benchmarks/benchmark.py --quick

Starts gunicorn with gunicorn.conf.py as `make run` does, on a free port, and talks to
it with http.client over keep-alive connections, one thread per client. Prints a
markdown table and writes it to benchmarks/results/latest.md.

Xception runs with XCEPTION_WEIGHTS, else Keras' cached ImageNet file, else random
weights saved once to benchmarks/results/cache/ (the same speed: only the values differ).
Nothing is downloaded.

The inputs: a 28x28 MNIST PNG (the smallest upload), a 7 drawn on the home page's
canvas (the 280x280 RGBA PNG Chromium exported for the page, in benchmarks/inputs/), a
12-megapixel phone photo of a 7 on paper (4000x3000 JPEG, about 2 MB), and a 640x480
photo-like JPEG for Xception.

A whole number: a photo (1200x400 JPEG) of a 6-digit number written with MNIST test
digits, through /api/predict/number, against a photo of the same size of one of those
digits through /api/predict/mnist?model=cnn, the two requests taking turns.

The goals: a digit prediction within 3x a /health round trip (28x28 PNG), a drawn digit
within 3x (dense) and 4x (cnn), a 12 MP photo's digit within 0.6x one full decode of
that JPEG in this process, and a served Xception prediction within 1.25x one compiled
forward pass in this process (what serving adds), on either photo; a 6-digit number
within 1.5x one digit of the same photo size (segmentation and a batched model call
cost little more than one digit).
The drawn digit is also sent as the home page's live answers send it at each pen lift
(?model=...&keep=0: no copy of the upload kept); its rows are held to the same goals.
The /v1 (TF Serving protocol) rows show the digit models without image work or storage.
"""

import argparse
import http.client
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from app.samples import (STRAIGHT_DIGITS, draw_on_canvas, jpeg_bytes, multipart, photograph,  # noqa: E402
                         written_number)
from benchmarks.live_server import all_workers_warm, free_port  # noqa: E402
from train_mnist import load_mnist_idx  # noqa: E402

PHONE_PHOTO = RESULTS / "cache" / "phone_photo_12mp.jpg"
CANVAS_PNG = ROOT / "benchmarks" / "inputs" / "canvas_7_chromium.png"
IMAGENET_WEIGHTS = Path.home() / ".keras" / "models" / "xception_weights_tf_dim_ordering_tf_kernels.h5"
RANDOM_WEIGHTS = RESULTS / "cache" / "xception_random.weights.h5"
PHOTO_SIZE = (640, 480)
NUMBER_PHOTO_SIZE = (1200, 400)
NUMBER = "203719"  # each digit the fixture's first of its kind
NUMBER_GOAL = 1.5  # a 6-digit number's p50 / one digit's p50, photos of the same size
CLIENTS = (1, 4, 16)
THROUGHPUT_REQUESTS = ("POST /api/predict/mnist dense", "POST /api/predict/mnist cnn", "POST /api/predict/xception")
DIGIT_GOAL = 3.0  # digit p50 / health p50
CANVAS_GOALS = {"dense": 3.0, "cnn": 4.0}  # a drawn digit's p50 / health p50
PHONE_PHOTO_GOAL = 0.6  # a 12 MP photo's digit p50 / one full decode of it in this process
XCEPTION_GOAL = 1.25  # served Xception p50 / in-process forward pass p50


"""
## Requests
"""


def upload(filename, data, **fields):
    """(body, headers) of a multipart upload, built once per kind of request (and sent
    under a fresh boundary each time: as_sent)."""
    body, content_type = multipart(data, filename, **fields)
    return body, {"Content-Type": content_type}


def as_sent(method, path, body, headers):
    """The request as browsers and curl send it: a multipart body goes under a fresh random
    boundary each time. (Werkzeug compiled patterns for each new boundary, 0.75 ms a
    request, which one fixed boundary had hidden.) Done before a request's clock starts."""
    content_type = headers.get("Content-Type", "")
    if content_type.startswith("multipart/form-data; boundary="):
        old = content_type.split("boundary=", 1)[1]
        new = "----WebKitFormBoundary" + secrets.token_hex(8)
        body = body.replace(f"--{old}".encode(), f"--{new}".encode())
        headers = {**headers, "Content-Type": f"multipart/form-data; boundary={new}"}
    return method, path, body, headers


def mnist_digit():
    """A real MNIST test digit, uint8 (28, 28)."""
    _, (images, _) = load_mnist_idx(ROOT / "tests" / "fixtures" / "mnist")
    return images[0]


def digit_png():
    """The digit as a 28x28 PNG, the smallest upload the app sees."""
    buffer = io.BytesIO()
    Image.fromarray(mnist_digit()).save(buffer, "PNG")
    return buffer.getvalue()


def canvas_png():
    """A 7 drawn with the mouse on the home page's canvas in Chromium, the 280x280 RGBA PNG
    that draw.js uploads, byte for byte (scripts/capture_canvas_png.py made it). Until
    2026-11-27 this was Pillow's encoding of the same drawing, which took 0.87 ms to
    decode against 0.53 ms for the browser's: the benchmark sends what browsers send."""
    return CANVAS_PNG.read_bytes()


def phone_photo():
    """A 12-megapixel phone photo (4000x3000 JPEG, about 2 MB) of a 7 on paper, made once and cached."""
    if not PHONE_PHOTO.is_file():
        _, strokes = STRAIGHT_DIGITS["7"]
        photo = photograph(draw_on_canvas(strokes), size=(4000, 3000), digit_height=0.3, seed=12)
        PHONE_PHOTO.parent.mkdir(parents=True, exist_ok=True)
        PHONE_PHOTO.write_bytes(jpeg_bytes(photo, quality=92))
    return PHONE_PHOTO.read_bytes()


def number_photos():
    """(a photo of the 6-digit NUMBER, a photo of its first digit alone), both 1200x400 JPEGs."""
    _, (images, labels) = load_mnist_idx(ROOT / "tests" / "fixtures" / "mnist")
    digits = [images[int(np.flatnonzero(labels == int(d))[0])] for d in NUMBER]
    photos = []
    for row in (digits, digits[:1]):
        photo = photograph(written_number(row, height=120, gaps=[50] * (len(row) - 1)), size=NUMBER_PHOTO_SIZE,
                           digit_height=0.45, seed=6)
        photos.append(jpeg_bytes(photo, quality=90))
    return photos


def tf_serving_body(arch):
    """The digit as one instance of a TF Serving predict request for `arch`."""
    pixels = mnist_digit().astype(np.float32) / 255.0
    instance = pixels.reshape(784) if arch == "dense" else pixels[..., None]
    return json.dumps({"instances": [instance.tolist()]}).encode(), {"Content-Type": "application/json"}


def photo_jpeg(size=PHOTO_SIZE):
    """A photo-sized JPEG with photo-like content (smooth shapes plus sensor noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    rgb = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(9 * x * y)], axis=-1)
    pixels = (127.5 * (rgb + 1) + rng.normal(0, 12, rgb.shape)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def request_table():
    """name -> (method, path, body, headers) for every measured request."""
    png, jpeg, canvas, phone = digit_png(), photo_jpeg(), canvas_png(), phone_photo()
    number, one_digit = number_photos()
    return {
        "GET /health": ("GET", "/health", None, {}),
        "POST /api/predict/mnist dense": ("POST", "/api/predict/mnist", *upload("digit.png", png, model="dense")),
        "POST /api/predict/mnist cnn": ("POST", "/api/predict/mnist", *upload("digit.png", png, model="cnn")),
        "POST /api/predict/mnist dense, canvas": ("POST", "/api/predict/mnist",
                                                  *upload("drawing.png", canvas, model="dense")),
        "POST /api/predict/mnist cnn, canvas": ("POST", "/api/predict/mnist", *upload("drawing.png", canvas, model="cnn")),
        # The same drawing as the home page's live answers send it at each pen lift: the
        # model and keep=0 in the URL (no copy kept: no result page will show it).
        **{live_canvas(arch): ("POST", f"/api/predict/mnist?model={arch}&keep=0", *upload("drawing.png", canvas))
           for arch in ("dense", "cnn")},
        "POST /api/predict/mnist dense, 12 MP photo": ("POST", "/api/predict/mnist",
                                                       *upload("phone.jpg", phone, model="dense")),
        "POST /api/predict/mnist cnn, 12 MP photo": ("POST", "/api/predict/mnist",
                                                     *upload("phone.jpg", phone, model="cnn")),
        "POST /api/predict/number cnn, 6-digit 1200x400 photo": ("POST", "/api/predict/number",
                                                                 *upload("number.jpg", number, model="cnn")),
        "POST /api/predict/mnist cnn, 1-digit 1200x400 photo": ("POST", "/api/predict/mnist",
                                                                *upload("one.jpg", one_digit, model="cnn")),
        "POST /api/predict/xception": ("POST", "/api/predict/xception", *upload("photo.jpg", jpeg)),
        "POST /api/predict/xception, 12 MP photo": ("POST", "/api/predict/xception", *upload("phone.jpg", phone)),
        # The same models without the image work and upload storage: what the model path itself costs.
        "POST /v1/models/mnist_dense:predict": ("POST", "/v1/models/mnist_dense:predict", *tf_serving_body("dense")),
        "POST /v1/models/mnist_cnn:predict": ("POST", "/v1/models/mnist_cnn:predict", *tf_serving_body("cnn")),
    }


def live_canvas(arch):
    """The name of the drawn digit's request as the page's live answer sends it."""
    return f"POST /api/predict/mnist?model={arch}&keep=0, canvas (live answer)"


class Client:
    """One keep-alive connection; send() returns (status, seconds)."""

    def __init__(self, port):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, request, retry=True):
        method, path, body, headers = as_sent(*request)
        started = time.perf_counter()
        try:
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
            response.read()
        except (ConnectionError, http.client.HTTPException):
            self.connection.close()  # the server closed an idle connection: open a new one, once
            if not retry:
                raise
            return self.send(request, retry=False)
        return response.status, time.perf_counter() - started

    def close(self):
        self.connection.close()


"""
## Measurements
"""


def percentile_ms(seconds, q):
    return float(np.percentile(seconds, q)) * 1000 if seconds else float("nan")


def interleaved_latency(port, requests, count, warm_up=5, local=None):
    """{name: (seconds, errors)} for `count` rounds of one request of each kind, in turn, on
    one keep-alive connection, and of each function in `local` ({name: function}, work
    done in this process: a yardstick such as a full decode): every kind sees the same
    moments of the machine, so the ratios between them do not depend on what else ran
    during one kind's turn, nor on the machine's speed drifting between phases (on the
    2-core build machine, one full decode took 53 ms in one minute and 92-108 ms in another)."""
    client = Client(port)
    local = local or {}
    for _ in range(warm_up):
        for request in requests.values():
            client.send(request)
        for work in local.values():
            work()
    results = {name: ([], 0) for name in [*requests, *local]}
    for _ in range(count):
        for name, request in requests.items():
            status, seconds = client.send(request)
            times, errors = results[name]
            times.append(seconds)
            results[name] = (times, errors + (status != 200))
        for name, work in local.items():
            started = time.perf_counter()
            work()
            results[name][0].append(time.perf_counter() - started)
    client.close()
    return results


def throughput(port, request, clients, duration):
    """(requests per second, latencies, errors) with `clients` threads sending for `duration` s."""
    deadline = []
    # Every client connects first; the clock starts when the last one is ready.
    start = threading.Barrier(clients + 1, action=lambda: deadline.append(time.perf_counter() + duration))
    results = [([], [0]) for _ in range(clients)]

    def run(times, errors):
        client = Client(port)
        client.send(request)  # open the connection before the clock starts
        start.wait()
        while time.perf_counter() < deadline[0]:
            status, seconds = client.send(request)
            times.append(seconds)
            errors[0] += status != 200
        client.close()

    threads = [threading.Thread(target=run, args=result) for result in results]
    for thread in threads:
        thread.start()
    start.wait()
    began = deadline[0] - duration
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    times = [t for result in results for t in result[0]]
    return len(times) / elapsed, times, sum(result[1][0] for result in results)


def process_tree(pid):
    """[pid and its children's pids], from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return [pid, *sorted(children)]


def memory_mb(pid, field):
    """A memory field of one process in MB: VmRSS from /proc/<pid>/status, Pss from smaps_rollup."""
    source = "status" if field.startswith("Vm") else "smaps_rollup"
    for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_memory(pid):
    """([RSS of the master, then of each worker], total PSS) in MB.

    RSS counts the shared TensorFlow libraries once per process; PSS splits shared
    pages between the processes that map them, so the PSS total is the server's real share.
    """
    pids = process_tree(pid)
    return [memory_mb(p, "VmRSS") for p in pids], sum(memory_mb(p, "Pss") for p in pids)


def compiled_xception_forward(weights):
    """A function running one compiled Xception forward pass in this process (warmed up):
    the yardstick of the Xception requests, timed in turns with them."""
    from app.models import load_xception
    from app.preprocessing import prepare_xception_input

    model = load_xception(str(weights))
    model.warm_up()
    batch = prepare_xception_input(Image.open(io.BytesIO(photo_jpeg())))  # (1, 299, 299, 3)
    return lambda: model(batch)


def full_decode(data):
    """A function doing one full Pillow decode of the JPEG `data` in this process: the
    yardstick of the 12 MP photo requests, timed in turns with them."""
    return lambda: Image.open(io.BytesIO(data)).load()


def xception_weights():
    """A local Xception weights file, making a random one when there is none."""
    if os.environ.get("XCEPTION_WEIGHTS"):
        return Path(os.environ["XCEPTION_WEIGHTS"]), "XCEPTION_WEIGHTS"
    if IMAGENET_WEIGHTS.is_file():
        return IMAGENET_WEIGHTS, "ImageNet"
    if not RANDOM_WEIGHTS.is_file():
        from keras.applications import Xception

        RANDOM_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        Xception(weights=None).save_weights(str(RANDOM_WEIGHTS))
    return RANDOM_WEIGHTS, "random (no ImageNet file here)"


"""
## The server
"""


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    launched: float  # time.perf_counter() just before the launch
    log: io.TextIOBase

    def wait_until_warm(self):
        """Block until every worker has logged that its models are warm."""
        while not all_workers_warm(self.log, int(os.environ.get("WEB_CONCURRENCY", "2"))):
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log.read()[-3000:]}")
            time.sleep(0.2)


@contextmanager
def production_server(workdir, **env):
    """Start gunicorn the `make run` way, with `env` added to the environment; yield a Server."""
    port = free_port()
    environment = {**os.environ, "PORT": str(port), "UPLOAD_FOLDER": str(workdir / f"uploads-{port}"),
                   "GUNICORN_CMD_ARGS": "--max-requests 0",  # no worker recycling in the middle of a measurement
                   "JOB_EMBEDDED_WORKER": "0",  # no batch-job worker sharing the cores
                   **{key: str(value) for key, value in env.items()}}
    log = open(workdir / f"gunicorn-{port}.log", "w+")
    launched = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield Server(process, port, launched, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # requests still queued for a busy model: don't wait them out
            process.kill()
            process.wait()
        log.close()


def seconds_until_ok(server, request, timeout=300):
    """Seconds from the server's launch until `request` first answers 200 (polling every 50 ms)."""
    while time.perf_counter() - server.launched < timeout:
        client = Client(server.port)
        try:
            status, _ = client.send(request, retry=False)
            if status == 200:
                return time.perf_counter() - server.launched
        except OSError:  # not listening yet
            pass
        finally:
            client.close()
        time.sleep(0.05)
    raise RuntimeError(f"no successful {request[0]} {request[1]} within {timeout} s")


"""
## Run
"""


def cold_start(workdir, requests, env):
    """Start-up as `make run` does it: digit models warm in each worker, Xception on first use."""
    with production_server(workdir, **env) as server:
        results = {"first digit": seconds_until_ok(server, requests["POST /api/predict/mnist cnn"])}
        server.wait_until_warm()
        results["memory digits"] = server_memory(server.process.pid)
        results["first xception"] = seconds_until_ok(server, requests["POST /api/predict/xception"])
    return results


def check_answers(port, requests):
    """The drawn 7 and the photographed 7 must be read as 7, and the number photos as
    theirs: a fast wrong answer is no result."""
    client = Client(port)
    expected = {name: ("prediction", 7) for name in requests
                if "canvas" in name or ("12 MP" in name and "xception" not in name)}
    expected.update({name: ("number", NUMBER) for name in requests if "/number" in name})
    expected.update({name: ("prediction", int(NUMBER[0])) for name in requests if "1-digit" in name})
    try:
        for name, (key, value) in expected.items():
            request = requests[name]
            client.connection.request(*as_sent(*request))
            answer = json.loads(client.connection.getresponse().read())
            if answer.get(key) != value:
                raise RuntimeError(f"{name}: expected {value}, got {answer}")
    finally:
        client.close()


def number_latency(port, requests, count):
    """The number photo and the one-digit photo of the same size, taking turns."""
    return interleaved_latency(port, {name: request for name, request in requests.items() if "1200x400" in name}, count)


def warm_server(workdir, requests, env, args, forward):
    """Latency and throughput with every worker warm, Xception included."""
    with production_server(workdir, XCEPTION_EAGER=1, **env) as server:
        server.wait_until_warm()
        results = {"memory warm": server_memory(server.process.pid), "latency": {}, "throughput": {}}
        # Each model's requests take turns with /health, one model at a time: the CNN runs
        # in TensorFlow, whose threads spin on after a call and would slow whatever came next.
        check_answers(server.port, requests)
        for arch in ("dense", "cnn"):
            kinds = ("GET /health", f"POST /api/predict/mnist {arch}", f"POST /api/predict/mnist {arch}, canvas",
                     live_canvas(arch), f"POST /v1/models/mnist_{arch}:predict")
            turns = interleaved_latency(server.port, {name: requests[name] for name in kinds}, args.requests)
            results["latency"].update(turns if arch == "dense" else {k: v for k, v in turns.items() if k != kinds[0]})
            results[f"health beside {arch}"] = turns[kinds[0]][0]
        # The photo requests and Xception's take turns with their yardsticks, done here.
        photos = interleaved_latency(server.port, {name: request for name, request in requests.items()
                                                   if "12 MP" in name and "xception" not in name},
                                     args.photo_requests, local={"full decode": full_decode(phone_photo())})
        results["full decode"] = photos.pop("full decode")[0]
        results["latency"].update(photos)
        results["latency"].update(number_latency(server.port, requests, args.photo_requests))
        xception = interleaved_latency(server.port, {name: request for name, request in requests.items()
                                                     if "xception" in name},
                                       args.xception_requests, local={"forward": forward})
        results["forward"] = xception.pop("forward")[0]
        results["latency"].update(xception)
        for name in THROUGHPUT_REQUESTS:
            request = requests[name]
            duration = args.duration * (3 if "xception" in name else 1)  # a few requests per client at least
            for clients in CLIENTS:
                results["throughput"][name, clients] = throughput(server.port, request, clients, duration)
        results["memory loaded"] = server_memory(server.process.pid)
    return results


def run(args):
    requests = request_table()
    weights, weights_source = xception_weights()
    env = {"XCEPTION_WEIGHTS": weights}
    results = {"weights": weights_source, "load_before": os.getloadavg()}
    forward = compiled_xception_forward(weights)
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        results.update(cold_start(Path(scratch), requests, env))
        results.update(warm_server(Path(scratch), requests, env, args, forward))
    results["load_after"] = os.getloadavg()
    return results


def table(header, rows):
    """A markdown table; columns after the first are right-aligned."""
    return [f"| {' | '.join(header)} |", "|---|" + "---:|" * (len(header) - 1),
            *(f"| {' | '.join(str(cell) for cell in row)} |" for row in rows)]


def latency_section(results):
    rows = [(name, len(times), f"{percentile_ms(times, 50):.2f}", f"{percentile_ms(times, 99):.2f}", errors)
            for name, (times, errors) in results["latency"].items()]
    forward = results["forward"]
    rows.append(("compiled Xception forward pass, in the benchmark process", len(forward),
                 f"{percentile_ms(forward, 50):.2f}", f"{percentile_ms(forward, 99):.2f}", ""))
    decode = results["full decode"]
    rows.append(("one full Pillow decode of the 12 MP photo, in the benchmark process", len(decode),
                 f"{percentile_ms(decode, 50):.2f}", f"{percentile_ms(decode, 99):.2f}", ""))
    return ["## Latency, one client, keep-alive", "", *table(("request", "n", "p50 ms", "p99 ms", "errors"), rows)]


def throughput_section(results):
    rows = [(name, clients, f"{rate:.1f}", f"{percentile_ms(times, 50):.1f}", f"{percentile_ms(times, 99):.1f}", errors)
            for (name, clients), (rate, times, errors) in results["throughput"].items()]
    return ["## Throughput", "", *table(("request", "clients", "requests/s", "p50 ms", "p99 ms", "errors"), rows)]


def goals_section(results):
    p50 = {name: percentile_ms(times, 50) for name, (times, _) in results["latency"].items()}
    health = {arch: percentile_ms(results[f"health beside {arch}"], 50) for arch in ("dense", "cnn")}
    ratios = [
        ("digit (dense) p50 / health p50", p50["POST /api/predict/mnist dense"] / health["dense"], DIGIT_GOAL),
        ("digit (cnn) p50 / health p50", p50["POST /api/predict/mnist cnn"] / health["cnn"], DIGIT_GOAL),
        ("Xception served p50 / compiled forward p50",
         p50["POST /api/predict/xception"] / percentile_ms(results["forward"], 50), XCEPTION_GOAL),
        *((f"canvas digit ({arch}) p50 / health p50", p50[f"POST /api/predict/mnist {arch}, canvas"] / health[arch],
           CANVAS_GOALS[arch]) for arch in ("dense", "cnn")),
        *((f"canvas digit ({arch}) as the page's live answer (keep=0) p50 / health p50",
           p50[live_canvas(arch)] / health[arch], CANVAS_GOALS[arch]) for arch in ("dense", "cnn")),
        *((f"12 MP photo digit ({arch}) p50 / one full decode p50",
           p50[f"POST /api/predict/mnist {arch}, 12 MP photo"] / percentile_ms(results["full decode"], 50),
           PHONE_PHOTO_GOAL) for arch in ("dense", "cnn")),
        ("Xception on the 12 MP photo p50 / compiled forward p50",
         p50["POST /api/predict/xception, 12 MP photo"] / percentile_ms(results["forward"], 50), XCEPTION_GOAL),
        ("6-digit number photo p50 / 1-digit photo (cnn, same 1200x400 size) p50",
         p50["POST /api/predict/number cnn, 6-digit 1200x400 photo"]
         / p50["POST /api/predict/mnist cnn, 1-digit 1200x400 photo"], NUMBER_GOAL),
    ]
    rows = [(name, f"{value:.2f}", f"<= {goal}", "yes" if value <= goal else "NO") for name, value, goal in ratios]
    for arch in ("dense", "cnn"):  # for comparison: the model path alone, no image work, no upload stored
        value = p50[f"POST /v1/models/mnist_{arch}:predict"] / health[arch]
        rows.append((f"TF Serving predict ({arch}, one instance) p50 / health p50", f"{value:.2f}", "", ""))
    return ["## Goals", "", *table(("ratio", "value", "goal", "met"), rows)]


def startup_section(results):
    rows = [
        ("launch to first digit prediction (`make run` defaults)", f"{results['first digit']:.1f} s"),
        ("launch to first Xception prediction (loads on first use)", f"{results['first xception']:.1f} s"),
    ]
    for key, when in (("memory digits", "digit models warm, no Xception"),
                      ("memory warm", "warm, Xception loaded"),
                      ("memory loaded", "after the throughput runs")):
        rss, pss = results[key]
        rows.append((f"memory, {when}: RSS master + workers (PSS total)",
                     f"{' + '.join(f'{mb:.0f}' for mb in rss)} = {sum(rss):.0f} MB ({pss:.0f} MB)"))
    return ["## Start-up and memory", "", *table(("measure", "value"), rows)]


def report(results, args):
    """The results as a markdown document."""
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    threads = os.environ.get("GUNICORN_THREADS", "32")
    lines = [
        f"# Benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"gunicorn {workers} workers x {threads} threads (gunicorn.conf.py), Xception weights: {results['weights']}. "
        f"Load average before/after: {results['load_before'][0]:.2f} / {results['load_after'][0]:.2f}. "
        f"{args.requests} rounds of a health, a digit (28x28 PNG), a drawn digit (canvas PNG) as a form sends it and "
        "as the live answer sends it, and a TF Serving request in turn, per model "
        "(each ratio uses the health requests of its own rounds); "
        f"{args.photo_requests} rounds of a 12 MP photo digit request per model and a full decode of that photo "
        "here, in turn; "
        f"{args.photo_requests} rounds of a 6-digit number photo and a one-digit photo (1200x400) in turn; "
        f"{args.xception_requests} rounds of an Xception request per photo and a compiled forward pass here, in turn; "
        f"throughput runs of {args.duration:g} s ({3 * args.duration:g} s for Xception).",
    ]
    for section in (latency_section, throughput_section, goals_section, startup_section):
        lines += ["", *section(results)]
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--requests", type=int, default=1000, help="rounds of health, digit and TF Serving requests, per model")
    parser.add_argument("--xception-requests", type=int, default=30,
                        help="rounds of Xception requests (one per input) and compiled forward passes")
    parser.add_argument("--photo-requests", type=int, default=200,
                        help="rounds of 12 MP photo digit requests (one per model) and full decodes of that photo")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few requests, short runs")
    parser.add_argument("--numbers-only", action="store_true",
                        help="only the number row: a 6-digit number photo against a one-digit photo, printed")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.xception_requests, args.photo_requests, args.duration = 50, 5, 10, 1.0
    return args


def numbers_only(args):
    """The number row alone, on a warm server: its latencies and ratio, printed."""
    requests = {name: request for name, request in request_table().items() if "1200x400" in name}
    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        with production_server(Path(scratch)) as server:
            server.wait_until_warm()
            check_answers(server.port, requests)
            latency = number_latency(server.port, requests, args.photo_requests)
    for name, (times, errors) in latency.items():
        print(f"{name}: n {len(times)}, p50 {percentile_ms(times, 50):.2f} ms, p99 {percentile_ms(times, 99):.2f} ms, "
              f"errors {errors}")
    number, one = (percentile_ms(times, 50) for times, _ in latency.values())
    print(f"ratio {number / one:.2f} (goal <= {NUMBER_GOAL}); load average {os.getloadavg()[0]:.2f}")


def main(argv=None):
    args = parse_args(argv)
    if args.numbers_only:
        numbers_only(args)
        return
    publish(report(run(args), args), args.out)


def publish(markdown, out):
    """Print a benchmark's markdown report and write it to `out`."""
    print(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
