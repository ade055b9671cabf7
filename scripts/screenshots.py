"""The README's screenshots, made by a browser rather than by hand: one phone, one desktop.

    python scripts/screenshots.py            # writes docs/screenshots/phone.png and desktop.png

Starts the production server (gunicorn, as `make run` does) on a temporary upload folder,
drives the system Chromium with Playwright, and saves:
- phone.png: the home page on a 390x844 touch phone, a 7 drawn with a finger on the canvas;
- desktop.png: the result page for a photo of a 7 on ruled paper, at 1280x800.
Nothing reaches the network.
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.samples import STRAIGHT_DIGITS, canvas_units, draw_on_canvas, draw_with_mouse, jpeg_bytes, photograph  # noqa: E402,E501
from benchmarks.live_server import live_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    seven = STRAIGHT_DIGITS["7"][1]
    photo = jpeg_bytes(photograph(draw_on_canvas(seven, 0.9), (1024, 768), "ruled", 0.6, seed=5))
    with tempfile.TemporaryDirectory() as folder, live_server(Path(folder) / "uploads") as url, \
            sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        phone = browser.new_context(base_url=url, **PHONE).new_page()
        phone.goto("/")
        draw_with_mouse(phone, phone.get_by_test_id("draw-canvas"), canvas_units("7", fill=0.7))
        phone.screenshot(path=out / "phone.png")
        desktop = browser.new_context(base_url=url, **DESKTOP).new_page()
        desktop.goto("/")
        desktop.get_by_test_id("upload-input").set_input_files(
            {"name": "seven.jpg", "mimeType": "image/jpeg", "buffer": photo})
        desktop.get_by_test_id("upload-submit").click()
        desktop.wait_for_url("**/digits/*")
        desktop.wait_for_load_state("networkidle")
        desktop.screenshot(path=out / "desktop.png")
        browser.close()
    print(f"wrote {out / 'phone.png'} and {out / 'desktop.png'}")


if __name__ == "__main__":
    main()
