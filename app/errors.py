"""Every error becomes a message a person understands: JSON for the API, a page otherwise."""

import logging

from flask import current_app, jsonify, make_response, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, ServiceUnavailable

from .batching import ServerBusy

JSON_PREFIXES = ("/api/", "/health", "/ready", "/v1/")

FRIENDLY = {
    404: "there is nothing at this address",
    405: "this address does not accept that method",
    413: "the upload is too large",
    500: "something went wrong on the server; the error has been logged",
}


def wants_json():
    return request.path.startswith(JSON_PREFIXES) or (
        request.accept_mimetypes.best == "application/json"
    )


def error_message(error):
    if error.description and error.description != type(error).description:
        return error.description  # a message we wrote with abort(..., description=...)
    if error.code == 413:
        limit = request.max_content_length
        if limit and (request.content_length is None or request.content_length > limit):
            return f"the upload is too large: the limit is {limit / 1024 / 1024:.0f} MB"
        return "the form is too large: too many parts, or a field that is too long"
    if error.code == 405:
        allowed = ", ".join(sorted(set(error.valid_methods or ()) - {"HEAD", "OPTIONS"}))
        return f"{FRIENDLY[405]}; use {allowed}" if allowed else FRIENDLY[405]
    return FRIENDLY.get(error.code, error.name.lower())


def handle_http_error(error):
    """Any HTTP error, ours or Werkzeug's, as {"error": ...} or as a page."""
    message = error_message(error)
    current_app.logger.log(
        logging.WARNING if error.code >= 500 else logging.INFO,
        "rejected %s %s: %s", request.method, request.path, message,
    )
    if wants_json():
        response = jsonify(error=message)
    else:
        response = make_response(render_template("error.html", message=message, status=error.code))
    response.status_code = error.code
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:  # 503: busy, or a model still loading
        response.headers["Retry-After"] = str(int(retry_after))
    return response


def handle_server_busy(busy):
    """A model's queue is full (batching.py, logged there with its count): 503, retry in N s."""
    return handle_http_error(ServiceUnavailable(description=str(busy), retry_after=busy.retry_after))


def add_security_headers(response):
    """No sniffing, no framing, scripts and styles from this site only."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    )
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def handle_malformed_body(error):
    """gunicorn finds a malformed chunked body only as the app reads it: a 400, not a 500."""
    return handle_http_error(BadRequest(description=f"the request body is malformed: {error}"))


def init_app(app):
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(ServerBusy, handle_server_busy)
    try:
        from gunicorn.http.errors import NoMoreData, ParseException
    except ImportError:  # not under gunicorn (Windows, the development server)
        pass
    else:
        app.register_error_handler(ParseException, handle_malformed_body)
        app.register_error_handler(NoMoreData, handle_malformed_body)
    app.after_request(add_security_headers)
