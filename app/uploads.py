"""Reading uploads from a request, and keeping the accepted ones on disk.

Validate first, store last: a rejected upload leaves nothing behind. An upload must
come as a multipart form; any other body is refused before it is parsed. Stored names
are generated (uuid + the detected format's extension), never the client's.
"""

import functools
import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from flask import Request, abort, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from .images import EXTENSIONS, ImageRejected, open_untrusted

# Generated names: uuid4 hex + extension. Always use fullmatch ("x.png\n" matches a `$`).
STORED_NAME = re.compile(r"[0-9a-f]{32}\.(png|jpg|gif|bmp|webp|tif)")
_prune_lock = threading.Lock()
_stored_since_prune = 0
_prune_folder_lock = threading.Lock()


# Forms -----------------------------------------------------------------------------


class LimitedFormDataParser(FormDataParser):
    """Werkzeug applies MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS to multipart forms only;
    here url-encoded forms get them too (10 MB of "a&a&..." cost 2.5 s of CPU and 321 MB)."""

    def _parse_urlencoded(self, stream, mimetype, content_length, options):
        limit = self.max_form_memory_size
        if limit is not None and content_length is not None and content_length > limit:
            raise RequestEntityTooLarge()
        body = read_at_most(stream, limit + 1) if limit is not None else stream.read()
        if limit is not None and len(body) > limit:  # sent chunked, without a Content-Length
            raise RequestEntityTooLarge()
        if self.max_form_parts is not None and body.count(b"&") >= self.max_form_parts:
            raise RequestEntityTooLarge()
        items = parse_qsl(body.decode(), keep_blank_values=True, errors="werkzeug.url_quote")
        return stream, self.cls(items), self.cls()


def read_at_most(stream, size):
    """Up to `size` bytes of `stream`: fewer only at its end."""
    chunks, remaining = [], size
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class LimitedRequest(Request):
    """Flask's request, with the form limits applied to every kind of form."""

    form_data_parser_class = LimitedFormDataParser


def accepts_upload(view):
    """Refuse a POST that is not a multipart form before anything reads its body."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        if request.method == "POST" and request.mimetype != "multipart/form-data":
            sent = request.mimetype[:60] or "no Content-Type"
            abort(415, description="send the image as a multipart form (multipart/form-data) "
                                   f"in the field 'file', as a browser or curl -F does; got {sent}")
        return view(*args, **kwargs)

    return checked


@dataclass
class Upload:
    data: bytes
    image: object  # the decoded PIL image (first frame)
    extension: str


def read_upload(field="file", draft=None):
    """The decoded image from the multipart field `field`; aborts with a clear message.

    `draft`: (mode, size) the caller needs at least, so that JPEGs decode at a reduced
    scale (preprocessing.DIGIT_DRAFT, XCEPTION_DRAFT)."""
    if field not in request.files:
        abort(400, description=f"no file: send the image in the multipart form field '{field}'")
    sent = request.files[field]
    data = sent.read()
    if not data and not sent.filename:  # a browser form submitted before a file was chosen
        abort(400, description="no file chosen: choose an image to upload")
    try:
        image, image_format = open_untrusted(data, current_app.config["MAX_IMAGE_PIXELS"], draft)
    except ImageRejected as exc:
        abort(exc.status, description=exc.message)
    return Upload(data=data, image=image, extension=EXTENSIONS[image_format])


def store_upload(upload):
    """Write the accepted upload under a generated name; returns that name."""
    folder = current_app.config["UPLOAD_FOLDER"]
    os.makedirs(folder, exist_ok=True)
    token = uuid.uuid4().hex
    name = f"{token}.{upload.extension}"
    # Write to a temporary file in the same folder, then rename: never half a file.
    tmp = os.path.join(folder, f".incoming-{token}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(upload.data)
        os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        os.unlink(tmp)
        raise
    # Scanning the folder costs ~5 ms per 1,000 files: do it every UPLOAD_PRUNE_EVERY uploads.
    global _stored_since_prune
    with _prune_lock:
        _stored_since_prune += 1
        due = _stored_since_prune >= current_app.config["UPLOAD_PRUNE_EVERY"]
        if due:
            _stored_since_prune = 0
    if due:
        prune_uploads(folder, current_app.config["UPLOAD_MAX_FILES"], current_app.config["UPLOAD_MAX_BYTES"])
    return name


def prune_uploads(folder, max_files, max_bytes):
    """Delete the oldest stored uploads until the folder is within both caps."""
    with _prune_folder_lock:
        entries = []
        for entry in os.scandir(folder):
            if STORED_NAME.fullmatch(entry.name):
                try:
                    stat = entry.stat()
                except FileNotFoundError:  # another worker pruned it first
                    continue
                entries.append((stat.st_mtime_ns, entry.name, stat.st_size))
        entries.sort()
        total = sum(size for _, _, size in entries)
        while entries and (len(entries) > max_files or total > max_bytes):
            _, name, size = entries.pop(0)
            try:
                os.unlink(Path(folder) / name)
            except FileNotFoundError:
                pass
            total -= size


def init_app(app):
    app.request_class = LimitedRequest
