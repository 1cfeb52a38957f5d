"""mailhub's template contract: what an auto-response template sees, and how it is checked.

The bounded sandbox itself (budgets, deadline, what Jinja features are gone) is
`autoresponse.sandbox`; this module says which variables exist, cuts the values to their bounds
before a template sees them, validates a template before it is saved and makes rendered text
safe as a header value. Pure Python: the caller builds the context from plain values (dicts,
lists, str, int, datetime), never ORM objects, shaped like `sample_context()`.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from .sandbox import MAX_LOOP_ITERATIONS, TemplateProblem, sandbox_compile, sandbox_render

__all__ = [
    "ALLOWED_VARIABLES",
    "MAX_CONTEXT_TEXT_CHARS",
    "MAX_CONTEXT_VALUE_CHARS",
    "MAX_HEADER_CHARS",
    "TemplateProblem",
    "header_value_safe",
    "sample_context",
    "template_render",
    "template_validate",
]

#: The only names a template may use; any other key of the context is ignored, a missing one is
#: None. ``case`` and ``lead`` are None for an email without one, ``email.date`` may be None.
ALLOWED_VARIABLES = ("email", "mailbox", "case", "lead")
#: Characters of the incoming email's text a template sees (the first 64 KiB): a body can be
#: megabytes, and what a template does with it is at most proportional to this.
MAX_CONTEXT_TEXT_CHARS = 64 * 1024
#: Characters of any other text of the context (subject, names, addresses...): a header's length.
MAX_CONTEXT_VALUE_CHARS = 998
#: Longest header value (RFC 5322 §2.1.1 line limit).
MAX_HEADER_CHARS = 998

_OPTIONAL_PART_HINT = (
    " (a part that is optional, such as case, lead or email.date, is not set for this email; "
    "guard it with {% if case %}...{% endif %})"
)


def _bounded(value: Any, limit: int = MAX_CONTEXT_VALUE_CHARS) -> Any:
    """A copy of a context value with every text cut to its bound: ``text`` keys (the email's
    body) to `MAX_CONTEXT_TEXT_CHARS`, every other text to `MAX_CONTEXT_VALUE_CHARS`."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, dict):
        return {
            key: _bounded(item, MAX_CONTEXT_TEXT_CHARS if key == "text" else MAX_CONTEXT_VALUE_CHARS)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_bounded(item) for item in value[:MAX_LOOP_ITERATIONS]]
    return value


def _render(
    source: str, context: dict[str, Any], *, html: bool, extra_variables: tuple[str, ...] = ()
) -> str:
    names = ALLOWED_VARIABLES + tuple(name for name in extra_variables if name not in ALLOWED_VARIABLES)
    template = sandbox_compile(source, html=html, variables=names)
    variables = {name: _bounded(context.get(name)) for name in names}
    try:
        return sandbox_render(template, variables)
    except TemplateProblem as problem:
        if problem.none_access:
            # Only case, lead and email.date can be None here: say which parts are optional.
            raise TemplateProblem(
                problem.message + _OPTIONAL_PART_HINT, problem.line, none_access=True
            ) from problem
        raise


def template_render(
    source: str, context: dict[str, Any], *, html: bool, extra_variables: tuple[str, ...] = ()
) -> str:
    """Render `source` with `context`; raises only TemplateProblem.

    ``html=True`` autoescapes every printed value (HTML bodies), ``html=False`` prints values as
    they are (plain-text bodies, subjects). `extra_variables` are names a caller adds to
    `ALLOWED_VARIABLES` (a canned response inserted by an agent also sees ``agent``), bounded
    like the others.
    """
    if not isinstance(context, dict):
        raise TemplateProblem("the template context must be a dict")
    return _render(source, context, html=bool(html), extra_variables=tuple(extra_variables))


def template_validate(source: str, *, html: bool) -> None:
    """Raise TemplateProblem when `source` cannot be saved.

    Compiling refuses syntax errors and unknown variables with their line. Rendering against
    `sample_context()` catches attribute typos; rendering again with ``case`` and/or ``lead`` (and
    ``email.date``) set to None catches mistakes inside ``{% if not case %}`` branches. In those
    None variants an unguarded use of an optional part is tolerated (a mailbox whose emails always
    have a case may use ``{{ case.reference }}`` directly); any other error is refused.
    """
    full = sample_context()
    _render(source, full, html=html)
    no_date = {**full["email"], "date": None}
    for variant in ({"case": None}, {"lead": None}, {"case": None, "lead": None, "email": no_date}):
        try:
            _render(source, {**full, **variant}, html=html)
        except TemplateProblem as problem:
            if not problem.none_access:
                raise


def sample_context() -> dict[str, Any]:
    """A realistic context, used for the admin preview and for validation. A fresh copy each call."""
    return {
        "email": {
            "subject": "Order 2024-0815: wrong size delivered",
            "sender_name": "Jane Doe",
            "sender_address": "jane.doe@example.com",
            "date": datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC),
            "text": (
                "Hello,\n\n"
                "I received my order 2024-0815 today, but the jacket is size M instead of L.\n"
                "Could you send me the right size? I still have the original packaging.\n\n"
                "Best regards,\nJane Doe\n"
            ),
        },
        "mailbox": {"label": "Customer Support", "address": "support@example.com"},
        "case": {
            "number": 1042,
            "reference": "#1042",
            "subject": "Order 2024-0815: wrong size delivered",
            "status": "open",
        },
        "lead": {"name": "Jane Doe", "status": "new"},
    }


# --------------------------------------------------------------------------- headers

# Control characters (Cc: C0, DEL, C1 including NEL), line/paragraph separators (Zl, Zp) and lone
# surrogates (Cs, which cannot be encoded) all become a space: no CR/LF survives, so a rendered
# subject can never start a new header line.
_HEADER_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})


def header_value_safe(value: str) -> str:
    """`value` as one header value of a message we send: CR, LF and every other control or line
    separator character become a space, runs of whitespace fold to one space, and the result is
    cut to `MAX_HEADER_CHARS` (RFC 5322 §2.1.1). Nothing rendered can start a new header line."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in _HEADER_UNSAFE_CATEGORIES else ch for ch in str(value or "")
    )
    return " ".join(cleaned.split())[:MAX_HEADER_CHARS].rstrip()
