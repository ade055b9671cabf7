"""What one upload costs the server: its answer, wall and CPU time, and the memory it adds.

    python tests/upload_cost.py png_palette_at_the_cap tiff_huge_tile ...   # a table
    with UploadMeter() as meter: meter.measure("tiff_huge_tile")            # from tests

Memory is the process's resident set (/proc/self/status), which sees what C decoders
allocate, unlike tracemalloc. A server process (the app built as `make run` builds
it, without loading any model) builds each file from tests/hostile_files.py, then
forks: the child resets its peak, posts the file to the real route through Flask's
test client, and reports. Each upload thus starts from the same clean process, and
no earlier upload's freed memory can hide what this one takes.
"""

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MNIST_URL = "/api/predict/mnist"


def memory_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def post_and_measure(client, body, content_type, folder):
    """In the forked child: one request, measured; the answer as a dict."""
    # Memory the server process freed but kept (building the files) goes back to the
    # system first: reused, it would hide what this upload takes.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak (VmHWM) starts again from the current size
    before = memory_kb("VmRSS")
    start, cpu_start = time.perf_counter(), os.times()
    response = client.post(MNIST_URL, data=body, content_type=content_type)
    cpu_end = os.times()
    return {
        "status": response.status_code,
        "error": (response.get_json(silent=True) or {}).get("error"),
        "seconds": round(time.perf_counter() - start, 3),
        "cpu_seconds": round(cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system, 3),
        "added_mb": round((memory_kb("VmHWM") - before) / 1024, 1),
        "stored": len(os.listdir(folder)) if os.path.isdir(folder) else 0,
    }


def serve(timeout):
    """The server process: one case name per line on stdin, one JSON answer per line."""
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import hostile_files
    from app import create_app
    from helpers import multipart

    scratch = tempfile.mkdtemp(prefix="upload-cost-")
    folder = os.path.join(scratch, "uploads")
    app = create_app({"TESTING": True, "UPLOAD_FOLDER": folder,
                      "XCEPTION_WEIGHTS": os.path.join(scratch, "no-weights.h5")})
    client = app.test_client()
    for line in sys.stdin:
        name = line.strip()
        data = getattr(hostile_files, name)()
        body, content_type = multipart(data, "upload")
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, answer, and leave without cleaning up
            os.close(reader)
            try:
                result = post_and_measure(client, body, content_type, folder)
            except BaseException as exc:  # noqa: BLE001 - reported, not hidden
                result = {"crash": repr(exc)}
            os.write(writer, json.dumps(result).encode())
            os._exit(0)
        os.close(writer)
        result = wait_for(pid, reader, timeout)
        result.update(case=name, bytes=len(data))
        print(json.dumps(result), flush=True)


def wait_for(pid, reader, timeout):
    """The child's answer, or its peak memory and a note if it runs past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            with os.fdopen(reader) as answer:
                return json.loads(answer.read() or '{"crash": "no answer"}')
        time.sleep(0.01)
    with open(f"/proc/{pid}/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(reader)
    return {"timed_out": timeout, "peak_mb": round(peak / 1024, 1)}


class UploadMeter:
    """The server process, from the tests' side."""

    def __init__(self, timeout=60):
        environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(timeout)], cwd=HERE.parent, env=environment,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def measure(self, name):
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the upload meter stopped (exit code {self.process.wait()})")
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(names, timeout=60):
    print(f"| case | bytes | status | answer | seconds | CPU s | added MB |\n|{' --- |' * 7}")
    with UploadMeter(timeout) as meter:
        for name in names:
            r = meter.measure(name)
            answer = r.get("error") or r.get("crash") or (f"killed after {timeout} s" if "timed_out" in r else "")
            added = r.get("added_mb", f"peak {r.get('peak_mb')}")
            print(f"| {name} | {r['bytes']:,} | {r.get('status', '-')} | {answer} | {r.get('seconds', '-')} | "
                  f"{r.get('cpu_seconds', '-')} | {added} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(float(sys.argv[2]))
    else:
        timeout = float(os.environ.get("UPLOAD_COST_TIMEOUT", "60"))
        main(sys.argv[1:], timeout)
