"""Every page, in every state a visitor meets, checked by axe-core and at phone, small
phone and tablet widths; and the result pages' address, reload, back and busy buttons.

PAGES lists the pages and states: each is a function that brings a fresh page there.
A new page (numbers, jobs) is checked everywhere by adding it to PAGES.
"""

from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image
from playwright.sync_api import expect

from app.samples import STRAIGHT_DIGITS, draw_on_canvas, jpeg_bytes, labelled_digits, photograph, zip_bytes

from .strokes import SEVEN, canvas_is_blank, draw_with_mouse

PHOTO = Path(__file__).resolve().parent.parent / "fixtures" / "photos" / "digit_photo_7.jpg"
WIDTHS = (320, 390, 768)
SERIOUS = ("serious", "critical")


def home(page, problems):
    page.goto("/")


def digit_result(page, problems):
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").click()
    page.wait_for_url("**/digits/*")


def drawing_result(page, problems):
    page.goto("/")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), SEVEN)
    page.get_by_test_id("draw-submit").click()
    page.wait_for_url("**/digits/*")


def several_digits_result(page, problems):
    """A photo of 1 2 3 written side by side: the page points to the number reader."""
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(
        {"name": "number.jpg", "mimeType": "image/jpeg", "buffer": number_photo()})
    page.get_by_test_id("upload-submit").click()
    page.wait_for_url("**/digits/*")
    page.get_by_test_id("several-digits").wait_for()


def number_photo():
    strokes = [STRAIGHT_DIGITS[name][1] for name in ("vertical 1", "7", "open 4")]
    drawings = [draw_on_canvas(digit, 0.8) for digit in strokes]
    row = Image.new("RGB", (280 * len(drawings), 280), "white")
    for index, drawing in enumerate(drawings):
        row.paste(drawing, (280 * index, 0))
    page = Image.new("RGB", (900, 600), "white")
    page.paste(row, (30, 160))
    return jpeg_bytes(photograph(page, (640, 480), "plain", 0.6, seed=2))


def upload_error(page, problems):
    problems.expect(415)
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture\n"})
    page.get_by_test_id("upload-submit").click()
    page.get_by_test_id("error").wait_for()


def expired_result(page, problems):
    problems.expect(404)
    page.goto("/digits/0123456789abcdef0123456789abcdef.png")


def xception(page, problems):
    page.goto("/xception")


def xception_without_weights(page, problems):
    problems.expect(503)  # the test server has no weights (see live_server)
    page.goto("/xception")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").click()
    page.get_by_test_id("error").wait_for()


def models(page, problems):
    page.goto("/models", wait_until="networkidle")


def jobs_form(page, problems):
    page.goto("/jobs")


def job_done(page, problems):
    """A finished job of four drawings and a text file (its row says why it failed)."""
    _, files = labelled_digits(4)
    page.goto("/jobs")
    page.get_by_test_id("jobs-input").set_input_files(
        {"name": "a class's exam sheets.zip", "mimeType": "application/zip",
         "buffer": zip_bytes({**files, "notes.txt": b"not a picture"})})
    page.get_by_test_id("jobs-submit").click()
    expect(page.get_by_test_id("job-status")).to_have_text("done", timeout=90_000)


PAGES = [home, digit_result, drawing_result, several_digits_result, upload_error, expired_result, xception,
         xception_without_weights, models, jobs_form, job_done]


@pytest.mark.parametrize("open_page", PAGES, ids=lambda open_page: open_page.__name__)
def test_axe_finds_nothing_serious_or_critical(page, problems, open_page):
    open_page(page, problems)
    results = Axe().run(page)
    serious = [violation for violation in results.response["violations"] if violation["impact"] in SERIOUS]
    assert serious == [], results.generate_report()


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("open_page", PAGES, ids=lambda open_page: open_page.__name__)
def test_no_page_is_wider_than_the_screen(page, problems, open_page, width):
    page.set_viewport_size({"width": width, "height": 800})
    open_page(page, problems)
    page.wait_for_load_state("load")
    scroll_width, client_width = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert scroll_width <= client_width


@pytest.fixture
def context_options(request):
    """A phone (390x844, touch) for the tests that ask for one with @pytest.mark.phone."""
    if request.node.get_closest_marker("phone"):
        return {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                "device_scale_factor": 3}
    return {"viewport": {"width": 1024, "height": 800}}


@pytest.mark.phone
def test_on_a_phone_the_canvas_fills_the_width_and_its_buttons_need_no_scrolling(page):
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas").bounding_box()
    submit = page.get_by_test_id("draw-submit").bounding_box()
    assert canvas["width"] >= 0.85 * 390 and abs(canvas["width"] - canvas["height"]) < 1
    assert submit["y"] + submit["height"] <= 844  # Recognise is on the first screen


@pytest.mark.phone
def test_on_a_phone_the_number_canvas_comes_first_with_its_button_on_the_first_screen(page):
    # It came after the upload form, its button near the bottom of the first screen.
    page.goto("/?mode=number")
    canvas = page.get_by_test_id("number-canvas").bounding_box()
    upload = page.get_by_test_id("number-input").bounding_box()
    submit = page.get_by_test_id("number-draw-submit").bounding_box()
    assert canvas["y"] < upload["y"] and canvas["width"] >= 0.85 * 390
    assert submit["y"] + submit["height"] <= 844  # Read the number is on the first screen


def test_the_result_has_an_address_that_survives_reload_and_back(page, base_url):
    drawing_result(page, None)
    address = page.url
    expect(page.get_by_test_id("prediction")).to_have_text("7")
    page.reload()
    assert page.url == address
    expect(page.get_by_test_id("prediction")).to_have_text("7")
    expect(page.get_by_test_id("try-another")).to_be_in_viewport()  # near the top
    page.go_back()
    expect(page).to_have_url(f"{base_url}/")
    page.wait_for_function("document.readyState === 'complete'")
    page.wait_for_timeout(200)  # the kept drawing is painted once its image decodes
    assert not canvas_is_blank(page.get_by_test_id("draw-canvas")), "back must bring the drawing back"


def test_a_double_click_sends_one_upload(page):
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").dblclick()
    page.wait_for_url("**/digits/*")
    assert len(posts) == 1


def test_the_button_says_it_is_busy(page):
    page.goto("/")
    # What the button said as the page was left for the result (this tab's storage outlives the page).
    page.evaluate("""addEventListener("beforeunload", () => {
        const button = document.querySelector("[data-testid=upload-submit]");
        sessionStorage.setItem("button-when-sent", button.textContent + "|" + button.getAttribute("aria-disabled"));
    })""")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").click()
    page.wait_for_url("**/digits/*")
    assert page.evaluate("sessionStorage.getItem('button-when-sent')") == "Recognising…|true"


def test_a_picture_dropped_on_the_upload_panel_is_ready_to_send(page):
    page.goto("/")
    page.evaluate("""async (bytes) => {
        const files = new DataTransfer();
        files.items.add(new File([new Uint8Array(bytes)], "seven.jpg", { type: "image/jpeg" }));
        const zone = document.querySelector("[data-testid=upload-input]").closest("section");
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
    }""", list(PHOTO.read_bytes()))
    assert page.evaluate("document.querySelector('[data-testid=upload-input]').files[0].name") == "seven.jpg"
    page.get_by_test_id("upload-submit").click()
    expect(page.get_by_test_id("prediction")).to_have_text("7")


def test_a_pasted_picture_is_ready_to_send(page):
    page.goto("/")
    page.evaluate("""async (bytes) => {
        const files = new DataTransfer();
        files.items.add(new File([new Uint8Array(bytes)], "pasted.jpg", { type: "image/jpeg" }));
        document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: files, bubbles: true, cancelable: true }));
    }""", list(PHOTO.read_bytes()))
    assert page.evaluate("document.querySelector('[data-testid=upload-input]').files[0].name") == "pasted.jpg"


@pytest.mark.phone
def test_phones_get_a_camera_shortcut_that_is_an_option_not_forced(page):
    page.goto("/")
    expect(page.get_by_text("Take a photo")).to_be_visible()
    assert page.get_by_test_id("camera-input").get_attribute("capture") == "environment"
    assert page.get_by_test_id("upload-input").get_attribute("capture") is None  # the gallery stays open to choose


def test_desktops_get_no_camera_shortcut(page):
    page.goto("/")
    expect(page.get_by_text("Take a photo")).to_be_hidden()


def test_axe_does_report_a_serious_violation_when_there_is_one(page):
    """The check above can fail: an image without a text alternative is critical to axe."""
    page.goto("/")
    page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\"/static/favicon.svg\">')")
    impacts = {violation["id"]: violation["impact"] for violation in Axe().run(page).response["violations"]}
    assert impacts.get("image-alt") == "critical"
