"""No page logs a JavaScript error or has a request that fails, not even a favicon."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

PHOTO = Path(__file__).resolve().parent.parent / "fixtures" / "photos" / "digit_photo_3.jpg"


@pytest.mark.parametrize("path", ["/", "/?mode=number", "/xception", "/models"])
def test_a_page_loads_without_errors(page, problems, path):
    page.goto(path, wait_until="networkidle")  # images, styles, scripts, icon: all of it

    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert problems.all() == []


def test_a_result_page_loads_without_errors(page, problems):
    page.goto("/")
    page.get_by_test_id("upload-input").set_input_files(PHOTO)
    page.get_by_test_id("upload-submit").click()
    page.wait_for_url("**/digits/*")
    page.wait_for_load_state("networkidle")

    expect(page.get_by_test_id("prediction")).to_be_visible()
    assert all_images_loaded(page), "an image on the result page did not load"
    assert problems.all() == []


def all_images_loaded(page):
    """True when every <img> decoded: a broken image is not always a failed request."""
    return page.evaluate("[...document.images].every(img => img.complete && img.naturalWidth > 0)")
