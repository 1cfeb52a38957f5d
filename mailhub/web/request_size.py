"""A bound on the size of every request body, checked before anything reads it.

Django bounds the form fields of a request (DATA_UPLOAD_MAX_MEMORY_SIZE) but not its files: an
upload of any size is received whole, spooled to a temporary file, before a view can look at its
size. The answer form is the one place that takes files (at most MAILHUB_ANSWER_MAX_BYTES of
them per answer), so a body larger than that plus room for the form's own fields is refused here
with 413, from its Content-Length, before the CSRF check or the view parse it. A body without a
Content-Length is not read at all by Django's WSGI request (it counts as empty).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

#: Room for the answer form's text fields (To, Cc, Bcc, subject, a 200,000-character body in
#: UTF-8) and the multipart framing, on top of the attachments' limit.
FORM_FIELDS_ROOM = 2 * 1024 * 1024


def request_body_limit() -> int:
    return int(settings.MAILHUB_ANSWER_MAX_BYTES) + FORM_FIELDS_ROOM


class RequestSizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0  # Django reads such a body as empty too
        if length > request_body_limit():
            limit = settings.MAILHUB_ANSWER_MAX_BYTES
            return HttpResponse(
                f"Request too large: attachments may have at most {limit:,} bytes per answer.",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        return self.get_response(request)
