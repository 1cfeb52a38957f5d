"""What My Emails serves as files: attachments, the original message, and the inline (cid:)
images of an email's HTML frame. Never rendered as one of our pages, whatever the sender declared.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING
from urllib.parse import quote

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from mailhub.web.users import AuthenticatedHttpRequest

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from .access import attachment_get_for_user, email_get_for_user

# The frame cannot send the session cookie (a sandboxed document has an opaque origin, so its
# requests are cross-site and SameSite=Lax cookies stay home): its inline images carry a signed
# token naming the reader instead, and the reader's access is checked again on every image.
INLINE_IMAGE_SALT = "mailhub.emails.inline-image"
INLINE_IMAGE_TOKEN_MAX_AGE = 12 * 3600
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})


def inline_image_token(*, user_id: int, email_id: int) -> str:
    return signing.dumps([user_id, email_id], salt=INLINE_IMAGE_SALT)


def _inline_image_reader(token: str, email_id: int) -> User | None:
    try:
        user_id, token_email_id = signing.loads(
            token, salt=INLINE_IMAGE_SALT, max_age=INLINE_IMAGE_TOKEN_MAX_AGE
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if token_email_id != email_id:
        return None
    return get_user_model().objects.filter(pk=user_id).first()


@require_GET
def email_inline_image(request: HttpRequest, pk: int, attachment_pk: int) -> HttpResponseBase:
    """An inline (cid:) image of an email, for its frame: authorized by the frame's token."""
    reader = _inline_image_reader(request.GET.get("t", ""), pk)
    if reader is None:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        reader = request.user
    attachment = attachment_get_for_user(user=reader, email_pk=pk, attachment_pk=attachment_pk)
    if attachment is None or attachment.content_type not in INLINE_IMAGE_TYPES:
        raise Http404("No such image.")
    response = _file_response(attachment.file, content_type=attachment.content_type)
    response["Content-Disposition"] = "inline"
    return response


# Served with their declared type only when it is harmless; anything else (text/html, SVG,
# XML, unknown) is a plain byte stream: a download must never be rendered as our own page.
DOWNLOAD_TYPES = frozenset(
    {
        *INLINE_IMAGE_TYPES,
        "application/pdf",
        "application/zip",
        "text/plain",
        "text/csv",
        "text/calendar",
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "message/rfc822",
    }
)
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f/\\]")
_ASCII_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["%;\\]')


def download_content_type(declared: str) -> str:
    declared = declared.split(";", 1)[0].strip().lower()
    return declared if declared in DOWNLOAD_TYPES else "application/octet-stream"


def attachment_content_disposition(filename: str) -> str:
    """`attachment` with the sender's filename, safe whatever it contains (RFC 6266).

    Control characters (a CR LF would end the header) and path separators become "_"; the
    UTF-8 name goes in `filename*` (RFC 8187 percent-encoding), and an ASCII look-alike in
    `filename` for old clients, without quotes, backslashes or percent signs.
    """
    name = _UNSAFE_FILENAME_CHARACTERS.sub("_", filename).strip().strip(".") or "attachment"
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    ascii_name = _ASCII_FALLBACK_UNSAFE.sub("_", ascii_name).strip() or "attachment"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _file_response(stored: FieldFile, *, content_type: str) -> FileResponse:
    try:
        handle = stored.open("rb")
    except (FileNotFoundError, ValueError) as exc:  # row without its file: nothing to serve
        raise Http404("The file is missing.") from exc
    response = FileResponse(handle, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    # Even if a browser ever rendered it, it would run nothing and reach nothing.
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def attachment_download(request: AuthenticatedHttpRequest, pk: int, attachment_pk: int) -> FileResponse:
    attachment = attachment_get_for_user(user=request.user, email_pk=pk, attachment_pk=attachment_pk)
    if attachment is None:
        raise Http404("No such attachment.")
    response = _file_response(attachment.file, content_type=download_content_type(attachment.content_type))
    response["Content-Disposition"] = attachment_content_disposition(attachment.filename)
    return response


@login_required
@require_GET
def email_original_download(request: AuthenticatedHttpRequest, pk: int) -> FileResponse:
    """The raw message as stored (RFC 5322 bytes), for what the page cuts (a long body, the
    attachments beyond the page's list, headers): a download, never rendered."""
    email = email_get_for_user(user=request.user, pk=pk)
    if email is None:
        raise Http404("No such email.")
    response = _file_response(email.raw, content_type="message/rfc822")
    response["Content-Disposition"] = attachment_content_disposition(f"email-{email.pk}.eml")
    return response
