"""Basic accessibility: every control has a name, and both flows work from the keyboard."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from .strokes import ONE, canvas_is_blank, draw_with_mouse

PHOTO = Path(__file__).resolve().parent.parent / "fixtures" / "photos" / "digit_photo_7.jpg"
CONTROLS = "input, button, select, textarea, canvas"
MAX_TABS = 30  # more presses than any of our pages has stops


@pytest.mark.parametrize("path", ["/", "/?mode=number", "/xception"])
def test_every_form_control_has_an_accessible_name(page, path):
    page.goto(path)
    unnamed = [control for control, name in accessible_names(page, CONTROLS) if not name.strip()]

    assert page.locator(CONTROLS).count() > 0
    assert unnamed == []


def test_a_photo_can_be_uploaded_with_the_keyboard_alone(page):
    # Listen for the file dialog before the page loads: a listener added just before
    # the key press can lose the race with the dialog (then headless Chromium just
    # drops it), about one run in twenty.
    with page.expect_file_chooser() as chooser:
        page.goto("/")
        tab_to(page, "upload-input")
        page.keyboard.press("Space")  # what opens the file dialog for a keyboard user
    chooser.value.set_files(PHOTO)
    page.keyboard.press("Tab")
    expect(page.get_by_test_id("upload-submit")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_test_id("prediction")).to_have_text("7")


def test_the_drawing_buttons_are_reachable_and_work_from_the_keyboard(page):
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    draw_with_mouse(page, canvas, ONE)
    tab_to(page, "draw-clear")
    page.keyboard.press("Space")
    assert canvas_is_blank(canvas), "Space on Clear must wipe the canvas"

    draw_with_mouse(page, canvas, ONE)
    page.keyboard.press("Tab")  # Predict comes right after Clear
    expect(page.get_by_test_id("draw-submit")).to_be_focused()
    page.keyboard.press("Enter")

    expect(page.get_by_test_id("prediction")).to_have_text("1")


def tab_to(page, test_id):
    """Press Tab until the element is focused; fails if Tab never reaches it."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement?.dataset.testid") == test_id:
            return
    raise AssertionError(f"[data-testid={test_id}] cannot be reached with Tab")


def accessible_names(page, selector):
    """(element's HTML, name) for each element that is in the accessibility tree,
    with the name Chromium itself computed (labels, aria-*, text, alt, title)."""
    devtools = page.context.new_cdp_session(page)
    try:
        root = devtools.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node_ids = devtools.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]
        names = []
        for node_id in node_ids:
            node = devtools.send("Accessibility.getPartialAXTree",
                                 {"nodeId": node_id, "fetchRelatives": False})["nodes"][0]
            if node.get("ignored"):  # hidden from everyone, e.g. the drawing's file field
                continue
            html = devtools.send("DOM.getOuterHTML", {"nodeId": node_id})["outerHTML"]
            names.append((html[:120], node.get("name", {}).get("value", "")))
        return names
    finally:
        devtools.detach()
