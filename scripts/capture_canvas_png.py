"""The benchmark's drawn digit, as Chromium's canvas really exports it.

    python scripts/capture_canvas_png.py     # writes benchmarks/inputs/canvas_7_chromium.png

Starts the production server, draws app.samples' straight-stroke 7 (at 0.75 of the canvas,
as the benchmark always drew it) on the home page's canvas with the mouse, and saves what
draw.js uploads: `canvas.toBlob(..., "image/png")`, a 280x280 RGBA PNG. A browser encodes
it its own way (Chromium: every row "Up"-filtered (PNG filter 2), fast zlib), and how it was encoded
decides how long the server takes to decode it: Pillow's own encoding of the same pixels
(adaptive filters, zlib level 6) took 0.87 ms to decode against 0.53 ms for Chromium's.
The benchmark sends this file, not a re-encoding. Nothing reaches the network.
"""

import argparse
import base64
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.samples import canvas_units, draw_with_mouse  # noqa: E402
from benchmarks.live_server import live_server  # noqa: E402
from scripts.screenshots import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

OUT = ROOT / "benchmarks" / "inputs" / "canvas_7_chromium.png"
FILL = 0.75

# The canvas as draw.js sends it, read back as a data URL.
EXPORT = """canvas => new Promise(resolve => canvas.toBlob(blob => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
}, "image/png"))"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder, live_server(Path(folder) / "uploads") as url, \
            sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url + "/")
        canvas = page.get_by_test_id("draw-canvas")
        draw_with_mouse(page, canvas, canvas_units("7", fill=FILL))
        data_url = canvas.evaluate(EXPORT)
        version = browser.version
        browser.close()
    png = base64.b64decode(data_url.split(",", 1)[1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(png)
    print(f"wrote {args.out}: {len(png)} bytes, exported by Chromium {version}")


if __name__ == "__main__":
    main()
