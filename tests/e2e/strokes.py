"""Digits drawn the way a person draws them, as pointer paths over the canvas.

A digit is a list of strokes; a stroke is a list of waypoints in canvas units
(0..1 across, 0..1 down). Between waypoints the pointer moves in small steps,
as a hand does, so draw.js sees a stream of pointermove events (app.samples.draw_with_mouse).
"""

from app.samples import canvas_units, draw_with_mouse, path  # noqa: F401 (the tests import them from here)

# One continuous stroke: a bar across the top, then a diagonal down to the left.
SEVEN = [[(0.28, 0.24), (0.72, 0.24), (0.44, 0.80)]]
# A plain upright stroke, leaning very slightly, as most people write a 1.
ONE = [[(0.52, 0.18), (0.49, 0.82)]]
# A 1 with a small flag at the top, drawn in one go.
ONE_WITH_FLAG = [[(0.42, 0.28), (0.53, 0.18), (0.50, 0.82)]]

VERTICAL_ONE = canvas_units("vertical 1", fill=0.9)  # the "no digit found" of the last round
WIDE_SEVEN = canvas_units("7 with a bar wider than tall", fill=0.9)
STRAIGHT_FOUR = canvas_units("open 4")


def draw_with_finger(page, canvas, digit):
    """The same strokes as touch events. Playwright's touchscreen only taps, so
    the touches go through the DevTools protocol, as a phone's touchscreen would."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()  # viewport coordinates once in view
    devtools = page.context.new_cdp_session(page)
    try:
        for stroke in digit:
            start, *rest = path(box, stroke)
            touch("touchStart", devtools, start)
            for position in rest:
                touch("touchMove", devtools, position)
            devtools.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    finally:
        devtools.detach()


def touch(kind, devtools, position):
    x, y = position
    devtools.send("Input.dispatchTouchEvent",
                  {"type": kind, "touchPoints": [{"x": x, "y": y, "radiusX": 4, "radiusY": 4, "force": 1}]})


def canvas_is_blank(canvas):
    """True when every pixel of the canvas is white."""
    return canvas.evaluate("""canvas => {
        const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        return pixels.every(value => value === 255);
    }""")
