"""A visitor recognises digits in Chromium: by uploading a photo, or by drawing one."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from .strokes import (ONE, ONE_WITH_FLAG, SEVEN, STRAIGHT_FOUR, VERTICAL_ONE, WIDE_SEVEN, canvas_is_blank,
                      draw_with_mouse)

PHOTOS = Path(__file__).resolve().parent.parent / "fixtures" / "photos"


@pytest.mark.parametrize("photo, digit", [
    ("digit_photo_3.jpg", "3"),
    ("digit_photo_7.jpg", "7"),
    ("chalk_photo_5.jpg", "5"),
])
def test_an_uploaded_photo_of_a_digit_is_recognised(page, photo, digit):
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(PHOTOS / photo)
    page.get_by_test_id("upload-submit").click()

    expect(page.get_by_test_id("prediction")).to_have_text(digit)
    expect(page.get_by_alt_text("Your image")).to_be_visible()


@pytest.mark.parametrize("strokes, digit", [
    (SEVEN, "7"),
    (ONE, "1"),
    (ONE_WITH_FLAG, "1"),
    (VERTICAL_ONE, "1"),
    (WIDE_SEVEN, "7"),
    (STRAIGHT_FOUR, "4"),
], ids=["seven", "one", "one-with-flag", "vertical-one-down-the-canvas", "wide-seven", "straight-four"])
def test_a_digit_drawn_with_the_mouse_is_recognised(page, strokes, digit):
    page.goto("/")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), strokes)
    page.get_by_test_id("draw-submit").click()

    expect(page.get_by_test_id("prediction")).to_have_text(digit)
    expect(page.get_by_alt_text("The 28 by 28 digit the models saw")).to_be_visible()



@pytest.mark.parametrize("tap", [(0.9, 0.1), (0.1, 0.9), (0.9, 0.5)], ids=["top-right", "bottom-left", "right"])
def test_a_stray_tap_beside_a_drawn_digit_changes_nothing(page, tap):
    """A touch screen's stray touch: one tap of the pen away from a small 1 was kept as ink,
    the dense net read 6, 9 or 5, and the page said "Not sure: 1 or 6?"."""
    page.goto("/")
    short_one = [[(0.3, 0.35), (0.3, 0.65)]]
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), short_one + [[tap, tap]])
    page.get_by_test_id("draw-submit").click()

    expect(page.get_by_test_id("headline")).to_have_text("It looks like a 1")

def test_predicting_a_cleared_canvas_asks_for_a_drawing_and_stays_on_the_page(page, base_url):
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    draw_with_mouse(page, canvas, SEVEN)
    page.get_by_test_id("draw-clear").click()
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)

    page.get_by_test_id("draw-submit").click()

    expect(page.get_by_test_id("draw-message")).to_contain_text("draw a digit first")
    expect(page).to_have_url(f"{base_url}/")
    assert posts == [], "an empty canvas must not be sent to the server"
    assert page.get_by_test_id("prediction").count() == 0
    assert canvas_is_blank(canvas), "Clear must wipe the drawing"


def test_the_page_shows_one_file_picker_the_drawing_keeps_its_own_out_of_sight(page):
    page.goto("/")

    expect(page.locator("input[type=file]")).to_have_count(3)  # upload, the phones' camera shortcut, drawing
    expect(page.locator("input[type=file]:visible")).to_have_count(1)
    expect(page.get_by_test_id("upload-input")).to_be_visible()


def test_uploading_a_text_file_shows_a_readable_error(page, problems, tmp_path):
    problems.expect(415)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture of a digit\n")
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(notes)
    page.get_by_test_id("upload-submit").click()

    error = page.get_by_test_id("error")
    expect(error).to_contain_text("unsupported file type", ignore_case=True)
    expect(error).to_have_attribute("role", "alert")
    expect(page.get_by_role("link", name="Go back and try again")).to_be_visible()

