"""A visitor reads a whole number in Chromium (uploaded or written on the wide canvas),
and sees answers appear while drawing, on both canvases."""

import re

import pytest
from playwright.sync_api import expect

from helpers import folder_files

from .strokes import draw_with_mouse

# Digits on the number canvas (840x280), in canvas units: each about a fifth of the
# width apart, as people write a number from left to right.
def at(stroke_list, left, width=0.12, top=0.15, height=0.7):
    return [[(left + x * width, top + y * height) for x, y in stroke] for stroke in stroke_list]


NUMBER_ONE = [[(0.5, 0.0), (0.45, 1.0)]]
NUMBER_SEVEN = [[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)]]
NUMBER_FOUR = [[(0.15, 0.0), (0.0, 0.62), (1.0, 0.62)], [(0.75, 0.2), (0.75, 1.0)]]


@pytest.fixture
def number_png(tmp_path, mnist_sample_for_browser):
    """A photo-sized PNG of the number 2026 written with real MNIST test digits."""
    from app.samples import photograph, written_number

    images, labels = mnist_sample_for_browser
    digits = [images[int(next(i for i, label in enumerate(labels) if label == int(d) and i >= skip))]
              for d, skip in zip("2026", (0, 0, 40, 0))]
    path = tmp_path / "number.jpg"
    photograph(written_number(digits), size=(1000, 400), digit_height=0.4, seed=3).save(path, quality=90)
    return path


@pytest.fixture(scope="session")
def mnist_sample_for_browser():
    from helpers import FIXTURES
    from train_mnist import load_mnist_idx

    _, (images, labels) = load_mnist_idx(FIXTURES / "mnist")
    return images, labels


def test_an_uploaded_photo_of_a_number_is_read_and_boxed(page, number_png):
    page.goto("/")
    page.get_by_test_id("number-mode").click()
    page.get_by_test_id("number-input").set_input_files(number_png)
    page.get_by_test_id("number-submit").click()

    expect(page.get_by_test_id("number-result")).to_have_text("2026")
    expect(page.get_by_test_id("number-boxes").locator("rect")).to_have_count(4)
    expect(page.get_by_alt_text("Your image")).to_be_visible()
    expect(page.get_by_alt_text("Digit 4 as the model saw it (28 by 28)")).to_be_visible()


def test_a_number_written_on_the_canvas_is_read(page):
    page.goto("/?mode=number")
    canvas = page.get_by_test_id("number-canvas")
    draw_with_mouse(page, canvas, at(NUMBER_SEVEN, 0.2) + at(NUMBER_ONE, 0.45) + at(NUMBER_FOUR, 0.65))
    page.get_by_test_id("number-draw-submit").click()

    expect(page.get_by_test_id("number-result")).to_have_text("714")


NUMBER_THREE = [[(0.0, 0.05), (0.5, 0.0), (0.95, 0.2), (0.45, 0.48), (0.95, 0.7), (0.5, 1.0), (0.0, 0.92)]]
A_TAP = [[(0.5, 0.97)]]  # pointerdown and pointerup at one place: how a point is written


def test_a_decimal_point_tapped_with_the_pen_is_part_of_the_number(page):
    """A zero-length line draws nothing on a canvas: the tap left no ink, and "3.14" was
    read as "314"."""
    page.goto("/?mode=number")
    canvas = page.get_by_test_id("number-canvas")
    draw_with_mouse(page, canvas, at(NUMBER_THREE, 0.1) + at(A_TAP, 0.26) + at(NUMBER_ONE, 0.36)
                    + at(NUMBER_FOUR, 0.55))
    page.get_by_test_id("number-draw-submit").click()

    expect(page.get_by_test_id("number-result")).to_have_text("3.14")


def test_the_number_canvas_answers_while_drawing_and_forgets_on_clear(page, base_url, server_uploads):
    kept_before = folder_files(server_uploads)
    page.goto("/?mode=number")
    canvas = page.get_by_test_id("number-canvas")
    live = page.get_by_test_id("number-live")
    expect(live).to_have_attribute("aria-live", "polite")

    draw_with_mouse(page, canvas, at(NUMBER_SEVEN, 0.2))
    expect(live.get_by_test_id("live-value")).to_have_text("7")
    draw_with_mouse(page, canvas, at(NUMBER_ONE, 0.45))
    expect(live.get_by_test_id("live-value")).to_have_text("71")
    expect(live.locator("meter")).to_have_count(20)  # ten bars for each digit

    page.get_by_test_id("number-clear").click()
    expect(live).to_be_empty()
    expect(page).to_have_url(f"{base_url}/?mode=number")  # no navigation, ever
    assert folder_files(server_uploads) == kept_before  # live answers keep no copies (keep=0)


def test_the_digit_canvas_answers_while_drawing_and_forgets_on_clear(page, base_url, server_uploads):
    kept_before = folder_files(server_uploads)
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    live = page.get_by_test_id("draw-live")
    one = [[(0.6, 0.15), (0.6, 0.85)]]
    four_left = [[(0.3, 0.15), (0.25, 0.6), (0.8, 0.6)]]

    draw_with_mouse(page, canvas, one)
    expect(live.get_by_test_id("live-value")).to_have_text("1")
    draw_with_mouse(page, canvas, four_left)
    expect(live.get_by_test_id("live-value")).to_have_text("4")
    expect(live.locator("meter")).to_have_count(10)

    page.get_by_test_id("draw-clear").click()
    expect(live).to_be_empty()
    expect(page).to_have_url(f"{base_url}/")
    assert folder_files(server_uploads) == kept_before  # live answers keep no copies (keep=0)


def test_the_digit_canvas_says_live_when_it_holds_several_digits(page, base_url):
    """The result page says "several digits side by side" and points to the number reader;
    the live answer, shown before anyone presses Recognise, said only "It looks like a 7"."""
    page.goto("/")
    canvas = page.get_by_test_id("draw-canvas")
    live = page.get_by_test_id("draw-live")

    draw_with_mouse(page, canvas, at(NUMBER_SEVEN, 0.55, width=0.3, top=0.25, height=0.5))
    expect(live.get_by_test_id("live-value")).to_have_text("7")
    expect(live.get_by_test_id("live-note")).to_have_count(0)  # one digit: nothing to add

    draw_with_mouse(page, canvas, at(NUMBER_ONE, 0.15, width=0.25, top=0.25, height=0.5))
    note = live.get_by_test_id("live-note")
    expect(note).to_contain_text("several digits side by side, not one")
    note.get_by_role("link", name="Read them as a number").click()
    expect(page).to_have_url(f"{base_url}/?mode=number")


def test_the_digit_canvas_says_live_when_it_is_not_sure(page):
    """A square with a bar across is an 8 or a 0 to the CNN (under 80% sure): the live
    answer says "Not sure", as the result page does, and not "It looks like an 8"."""
    page.goto("/")
    live = page.get_by_test_id("draw-live")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"),
                    [[(0.3, 0.15), (0.7, 0.15), (0.7, 0.85), (0.3, 0.85), (0.3, 0.15)], [(0.3, 0.5), (0.7, 0.5)]])
    expect(live).to_contain_text("Not sure: ")
    value, alternative = live.get_by_test_id("live-value"), live.get_by_test_id("live-alternative")
    expect(alternative).to_have_text(re.compile(r"^[0-9]$"))
    shown = value.text_content()
    assert shown != alternative.text_content()

    page.get_by_test_id("draw-submit").click()
    expect(page.get_by_test_id("headline")).to_contain_text("Not sure")
    expect(page.get_by_test_id("prediction")).to_have_text(shown)


# Drawings on which the two models give different digits, the CNN's more than 80% sure on the
# first: the live answer (the CNN's alone) said "It looks like a 0 (83.5% sure)", or "Not sure:
# 9 or 8?" with the CNN's runner-up, while the result page said "Not sure: 0 or 8?", "9 or 7?".
MODELS_DISAGREE = {
    "a short upright stroke": [[(0.5, 0.45), (0.5, 0.55)]],
    "a very small 7": [[(0.45, 0.45), (0.55, 0.45), (0.49, 0.58)]],
}


@pytest.mark.parametrize("strokes", MODELS_DISAGREE.values(), ids=MODELS_DISAGREE.keys())
def test_the_live_answer_says_not_sure_with_the_digits_the_result_page_names(page, strokes):
    page.goto("/")
    live = page.get_by_test_id("draw-live")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), strokes)
    expect(live).to_contain_text("Not sure: ")
    expect(live).to_contain_text("the dense network says")
    said_live = (live.get_by_test_id("live-value").text_content(), live.get_by_test_id("live-alternative").text_content())

    page.get_by_test_id("draw-submit").click()
    expect(page.get_by_test_id("headline")).to_contain_text("Not sure")
    assert said_live == (page.get_by_test_id("prediction").text_content(),
                         page.get_by_test_id("alternative").text_content())


def test_the_live_answer_says_why_the_second_model_did_not_answer(page):
    """The result page shows a model's error under the other's answer; so does the live answer."""
    page.route("**/api/predict/mnist?model=dense*", lambda route: route.fulfill(
        status=503, json={"error": "the dense model is not available: run make train"}))
    page.goto("/")
    live = page.get_by_test_id("draw-live")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), [[(0.28, 0.24), (0.72, 0.24), (0.44, 0.80)]])
    expect(live.get_by_test_id("live-value")).to_have_text("7")
    expect(live).to_contain_text("The dense model is not available: run make train.")


@pytest.mark.parametrize("address, canvas, live, submit", [
    ("/", "draw-canvas", "draw-live", "draw-submit"),
    ("/?mode=number", "number-canvas", "number-live", "number-draw-submit"),
])
def test_a_refused_drawing_is_worded_live_as_on_the_error_page(page, problems, address, canvas, live, submit):
    """A dash: the live answer said "no digit found: ..." (the API's words, lower case, no
    full stop), the error page "No digit found: ....". Both are sentences now."""
    problems.expect(400)
    page.goto(address)
    drawing_area = page.get_by_test_id(canvas)
    drawing_area.scroll_into_view_if_needed()  # the number canvas starts below a 1024x800 window's fold
    draw_with_mouse(page, drawing_area, [[(0.4, 0.5), (0.6, 0.5)]])
    live_answer = page.get_by_test_id(live)
    expect(live_answer).to_contain_text("found: only a dot or a dash")
    said_live = live_answer.inner_text()

    with page.expect_navigation():
        page.get_by_test_id(submit).click()
    expect(page.get_by_test_id("error")).to_have_text(said_live)
    assert said_live[0].isupper() and said_live.endswith(".")


def test_the_live_answer_is_read_out_as_one_sentence(page):
    """An aria-live region is read out at every change: the bars beside the sentence made
    a screen reader say "0, digit 0, 1, digit 1, ..." after each pen lift."""
    page.goto("/")
    live = page.get_by_test_id("draw-live")
    draw_with_mouse(page, page.get_by_test_id("draw-canvas"), [[(0.28, 0.24), (0.72, 0.24), (0.44, 0.80)]])
    expect(live.get_by_test_id("live-value")).to_have_text("7")
    expect(live.locator("meter")).to_have_count(10)  # still drawn for the eye
    spoken = live.aria_snapshot()
    assert "meter" not in spoken and "list" not in spoken, spoken
    assert "It looks like a" in spoken and "sure" in spoken


def test_an_answer_for_a_drawing_that_changed_is_never_shown(page):
    """The server is slowed down: a stroke drawn while an answer is on its way makes that
    answer stale, so only the answer for the whole drawing may appear, once."""
    page.goto("/?mode=number")
    answers = []

    def slow(route):
        import time
        time.sleep(0.8)
        response = route.fetch()
        answers.append(response.json()["number"])
        route.fulfill(response=response)

    # A glob without "?*" misses the live answers' "?keep=0": nothing was slowed, and the test failed.
    page.route("**/api/predict/number?*", slow)
    canvas = page.get_by_test_id("number-canvas")
    live = page.get_by_test_id("number-live")
    draw_with_mouse(page, canvas, at(NUMBER_SEVEN, 0.2))
    page.wait_for_timeout(400)  # the debounced request for "7" is in flight now
    draw_with_mouse(page, canvas, at(NUMBER_ONE, 0.45))

    expect(live.get_by_test_id("live-value")).to_have_text("71")
    page.wait_for_timeout(1500)
    assert answers == ["7", "71"], "one request at a time: the stale one, then the current drawing's"
    expect(live.get_by_test_id("live-value")).to_have_text("71")


def test_a_double_click_on_read_the_number_sends_one_upload(page, number_png):
    page.goto("/?mode=number")
    # Counted in the page, as submissions the browser goes on with: counting requests missed
    # the second POST whenever the first navigation had already cancelled it.
    page.evaluate("""addEventListener("submit", (event) => {
        if (!event.defaultPrevented) sessionStorage.setItem("submits", String(Number(sessionStorage.getItem("submits")) + 1));
    })""")
    page.get_by_test_id("number-input").set_input_files(number_png)
    page.get_by_test_id("number-submit").dblclick()
    expect(page.get_by_test_id("number-result")).to_have_text("2026")
    assert page.evaluate("sessionStorage.getItem('submits')") == "1", "busy after the first press, as the digit's form is"


@pytest.mark.parametrize("address, submit, message, noun, button", [
    ("/", "draw-submit", "draw-message", "digit", "Recognise"),
    ("/?mode=number", "number-draw-submit", "number-message", "number", "Read the number"),
])
def test_an_empty_canvas_names_the_button_to_press(page, address, submit, message, noun, button):
    page.goto(address)
    page.get_by_test_id(submit).click()
    expect(page.get_by_test_id(message)).to_have_text(
        f"The canvas is empty: draw a {noun} first, then press {button}.")
