"""The email HTML sanitizer of the staff pages: it lives in `mailboxes.mime.sanitize` (pure), so
that processing can quote an email with the same allow-list; this name keeps the pages' imports."""

from mailboxes.mime.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    DOCUMENT_CSS,
    REMOVED_WITH_CONTENT,
    SAFE_CSS_PROPERTIES,
    URL_SCHEMES,
    SanitizedHtml,
    clean_style,
    email_body_csp,
    email_html_document,
    normalize_content_id,
    sanitize_email_html,
)

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "ALLOWED_TAGS",
    "DOCUMENT_CSS",
    "REMOVED_WITH_CONTENT",
    "SAFE_CSS_PROPERTIES",
    "URL_SCHEMES",
    "SanitizedHtml",
    "clean_style",
    "email_body_csp",
    "email_html_document",
    "normalize_content_id",
    "sanitize_email_html",
]
