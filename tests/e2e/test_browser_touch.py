"""On a phone, a digit drawn with a finger is recognised like one drawn with a mouse."""

import pytest
from playwright.sync_api import expect

from .strokes import SEVEN, draw_with_finger


@pytest.fixture
def context_options(playwright_driver):
    """A phone: small viewport, touchscreen, mobile layout."""
    phone = dict(playwright_driver.devices["Pixel 5"])
    del phone["default_browser_type"]  # a launch setting, not a context option
    return phone


def test_a_digit_drawn_with_a_finger_is_recognised(page):
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    draw_with_finger(page, canvas, SEVEN)
    page.get_by_test_id("draw-submit").click()

    expect(page.get_by_test_id("prediction")).to_have_text("7")


def test_a_finger_stroke_draws_instead_of_scrolling_the_page(page):
    # Without `touch-action: none` on the canvas, this swipe scrolls the page and
    # the browser cancels the stroke (pointercancel) after a few pixels.
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    canvas.scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    draw_with_finger(page, canvas, [[(0.5, 0.15), (0.5, 0.85)]])

    assert page.evaluate("window.scrollY") == scrolled
