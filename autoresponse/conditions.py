"""Conditions of auto-response rules, evaluated against the facts of one incoming email.

Pure Python: no ORM, no settings, no network. The database layer turns `RuleCondition` rows into
`ConditionSpec` and an incoming `Email` into `EmailFacts`, then calls `rule_matches`.

Semantics (shown to admins in the rule editor, keep in sync):

* A rule is a list of conditions and a match mode: ``"all"`` (every condition holds) or ``"any"``
  (at least one holds). A rule without conditions matches every email, whatever the mode.
* Every comparison is case-insensitive (Unicode case folding, so ``STRASSE`` equals ``straße``).
* Fields:

  - ``subject``, ``text_body``, ``sender_address``, ``sender_name``: one text each.
  - ``to``, ``cc``: one candidate text per recipient *and per form*: the bare address
    (``jane@example.com``) and, when the recipient has a display name, ``Jane Doe
    <jane@example.com>``. A condition holds when it holds for at least one candidate, except:
    ``not_contains`` holds only when *no* candidate contains the value (it is the negation of
    ``contains`` over the whole field); ``is_empty`` means "no recipients", ``is_not_empty`` "at
    least one".
  - ``header``: every value of the header named ``header_name`` (name compared case-insensitively),
    with the same any-candidate / whole-field-negation rules as ``to``/``cc``. An absent header is
    empty: ``is_empty`` holds, ``contains``/``equals``/... do not, ``not_contains`` does.

* Operators:

  - ``contains`` / ``not_contains``: substring test; the value is used verbatim (a value
    ``"Re: "`` requires the space).
  - ``equals``: both sides stripped of surrounding whitespace, then compared.
  - ``starts_with`` / ``ends_with``: the field text is stripped of surrounding whitespace (so a
    trailing newline of a body does not defeat ``ends_with``); so is the value on its outer side
    only (``"Re: "`` as a prefix still requires the space after the colon).
  - ``regex``: a `regex`-module pattern (Python ``re`` syntax), searched anywhere in the text
    (anchor with ``^``/``$`` yourself), case-insensitive with full case folding; inline flags
    such as ``(?m)`` or ``(?s)`` work. At match time each search gets `REGEX_TIMEOUT` seconds
    and only the first `REGEX_INPUT_LIMIT` characters of the text, and all regex searches for one
    email together (every candidate of every condition of every rule) share one `RegexBudget`
    of `REGEX_EMAIL_BUDGET` seconds: each search gets what is left of it, and once it is used
    up the remaining regex tests do not run. A timeout counts as "no match", is logged and is
    counted on the budget, so the caller can record why the rule did not answer.
  - ``is_empty`` / ``is_not_empty``: a text is empty when it is blank (only whitespace); the
    value is ignored.

* Line folding in header values (CRLF followed by blanks) is undone before comparing.
* Matching never raises: an invalid condition (unknown field, operator, an uncompilable regex
  saved before validation existed...) does not hold, not even a negative one, and is logged.
  ``rule_matches`` with an unknown match mode matches nothing. Invalid input is refused earlier by
  `validate_condition`, which raises `ConditionError` with a message for the admin.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import regex

from mailboxes.mime.headers import unfold as _unfold

__all__ = [
    "FIELDS",
    "MATCH_MODES",
    "OPERATORS",
    "REGEX_EMAIL_BUDGET",
    "REGEX_INPUT_LIMIT",
    "REGEX_MAX_LENGTH",
    "REGEX_TIMEOUT",
    "ConditionError",
    "ConditionSpec",
    "EmailFacts",
    "RegexBudget",
    "condition_matches",
    "rule_matches",
    "validate_condition",
]

logger = logging.getLogger(__name__)

FIELDS = ("subject", "text_body", "sender_address", "sender_name", "to", "cc", "header")
OPERATORS = (
    "contains",
    "not_contains",
    "equals",
    "starts_with",
    "ends_with",
    "regex",
    "is_empty",
    "is_not_empty",
)
MATCH_MODES = ("all", "any")

#: Operators that ignore the value.
_VALUELESS = frozenset({"is_empty", "is_not_empty"})

#: Longest accepted pattern (the model column is 500 characters as well).
REGEX_MAX_LENGTH = 500
#: Seconds one regex search may take at match time before it counts as "no match".
REGEX_TIMEOUT = 0.1
#: Seconds all regex searches for one email may take together (200 recipients x 0.1 s was 20 s).
REGEX_EMAIL_BUDGET = 0.5
_MIN_REGEX_TIMEOUT = 0.001
#: Characters of a text that a regex sees at match time (a body can be megabytes).
REGEX_INPUT_LIMIT = 100_000

#: Save-time probe: adversarial inputs of this length...
_PROBE_LENGTH = 5000
#: ...each searched with this timeout...
_PROBE_TIMEOUT = 0.25
#: ...and all of them together within this budget (keeps the admin form responsive).
_PROBE_BUDGET = 2.0
#: Characters whose long runs trip typical catastrophic patterns, on top of the pattern's own.
_PROBE_CHARS = "a0 \t.-_@é"
#: What follows the run: something most patterns fail on, so that the engine backtracks.
_PROBE_TAILS = ("!", "\n", "\x00", "")
_PROBE_MAX_PATTERN_CHARS = 16

#: The `regex` module expands fixed repetitions while compiling: ``(?:a{1000}){1000}`` takes
#: hundreds of MB before any input is seen, so counts are bounded before compiling.
_MAX_REPEAT = 1000
_MAX_REPEAT_PRODUCT = 10_000

# FULLCASE: the same case folding as the other operators (casefold), so STRASSE matches straße.
_FLAGS = regex.IGNORECASE | regex.FULLCASE | regex.UNICODE | regex.VERSION0


class ConditionError(ValueError):
    """A condition that cannot be saved; the message is meant for the admin."""


@dataclass(frozen=True)
class ConditionSpec:
    field: str
    operator: str
    value: str = ""
    header_name: str = ""  # only for field == "header"


@dataclass(frozen=True)
class EmailFacts:
    subject: str
    text_body: str
    sender_address: str
    sender_name: str
    to: list[tuple[str, str]]  # (display name, address)
    cc: list[tuple[str, str]]
    headers: list[tuple[str, str]]  # top-level headers in order, decoded


@dataclass
class RegexBudget:
    """The regex time of one email, shared by all its conditions (see the module docstring)."""

    remaining: float = REGEX_EMAIL_BUDGET
    clock: Callable[[], float] = time.monotonic
    #: Searches that timed out or were skipped because the budget was used up.
    timeouts: int = 0


# --------------------------------------------------------------------------- validation


def _check_repeat_counts(pattern: str) -> None:
    """Refuse explicit repetition counts that would make the compiled pattern huge.

    A deliberately simple scanner: it skips escapes and character classes, tracks groups, and
    multiplies the ``{m}``/``{m,n}`` counts along each nesting path. It may over-estimate (e.g. a
    literal ``{12}``), which only refuses patterns nobody needs.
    """
    stack: list[int] = []  # per open group: the largest count product inside it so far
    current = 1  # largest product at the current level
    last_group = 1  # product inside the group that just closed (the atom a quantifier follows)
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            last_group = 1
            continue
        if ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            if i < n and pattern[i] == "]":
                i += 1
            while i < n and pattern[i] != "]":
                i += 2 if pattern[i] == "\\" else 1
            i += 1
            last_group = 1
            continue
        if ch == "(":
            stack.append(current)
            current = 1
            i += 1
            continue
        if ch == ")":
            last_group = current
            current = stack.pop() if stack else 1
            current = max(current, last_group)
            i += 1
            continue
        if ch == "{":
            match = regex.match(r"\{(\d*)(?:,(\d*))?\}", pattern[i:])
            if match and (match.group(1) or match.group(2)):
                count = max(int(g) for g in match.groups() if g)
                if count > _MAX_REPEAT:
                    raise ConditionError(f"Repetition count {count} is too large (at most {_MAX_REPEAT}).")
                product = count * last_group
                if product > _MAX_REPEAT_PRODUCT:
                    raise ConditionError(
                        "Nested repetition counts are too large "
                        f"({product} repetitions, at most {_MAX_REPEAT_PRODUCT})."
                    )
                current = max(current, product)
                last_group = 1
                i += match.end()
                continue
        last_group = 1
        i += 1


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> regex.Pattern[str]:
    """Compile a pattern after the size checks; raises ConditionError (not cached)."""
    if len(pattern) > REGEX_MAX_LENGTH:
        raise ConditionError(
            f"The regular expression is too long ({len(pattern)} characters, at most {REGEX_MAX_LENGTH})."
        )
    _check_repeat_counts(pattern)
    try:
        return regex.compile(pattern, _FLAGS)
    # regex.error for syntax; Overflow/Value/Recursion for absurd counts, escapes or nesting.
    except (regex.error, OverflowError, ValueError, RecursionError) as exc:
        raise ConditionError(f"The regular expression does not compile: {exc}") from None


def _probe_inputs(pattern: str) -> list[str]:
    """Adversarial texts: a long run of one character followed by a character that fails."""
    own = []
    for ch in pattern:
        if ch.isprintable() and not ch.isspace() and ch not in own and ch not in _PROBE_CHARS:
            own.append(ch)
    chars = list(_PROBE_CHARS) + own[:_PROBE_MAX_PATTERN_CHARS]
    return [ch * _PROBE_LENGTH + tail for ch in chars for tail in _PROBE_TAILS]


def _probe(compiled: regex.Pattern[str]) -> None:
    """Refuse a pattern that backtracks catastrophically (ReDoS) on adversarial input.

    Exponential patterns such as ``(a+)+$`` time out on a 5000-character run; linear ones finish
    in microseconds. A polynomial pattern may pass and is then still bounded at match time by
    `REGEX_TIMEOUT`.
    """
    deadline = time.monotonic() + _PROBE_BUDGET
    for text in _probe_inputs(compiled.pattern):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConditionError(
                "The regular expression is too slow on long inputs; simplify it (avoid nested "
                "repetition such as (a+)+ or (.*)*)."
            )
        try:
            compiled.search(text, timeout=min(_PROBE_TIMEOUT, remaining))
        except TimeoutError:
            raise ConditionError(
                "The regular expression can take too long on some inputs (catastrophic "
                "backtracking); avoid nested repetition such as (a+)+ or (\\w+\\s?)+."
            ) from None


def _valid_header_name(name: str) -> bool:
    # RFC 5322 §3.6.8: printable US-ASCII except colon.
    return bool(name) and all(33 <= ord(ch) <= 126 and ch != ":" for ch in name)


def validate_condition(spec: ConditionSpec) -> None:
    """Raise ConditionError (message for the admin) if `spec` cannot be saved."""
    if spec.field not in FIELDS:
        raise ConditionError(f"Unknown field {spec.field!r}.")
    if spec.operator not in OPERATORS:
        raise ConditionError(f"Unknown operator {spec.operator!r}.")
    if spec.field == "header":
        name = (spec.header_name or "").strip()
        if not name:
            raise ConditionError("A header condition needs the header name (e.g. X-Priority).")
        if not _valid_header_name(name):
            raise ConditionError(f"{name!r} is not a valid header name.")
    if spec.operator in _VALUELESS:
        return
    if not (spec.value or "").strip():
        raise ConditionError("This operator needs a value.")
    if spec.operator == "regex":
        _probe(_compile(spec.value))


# --------------------------------------------------------------------------- matching


def _fold(text: str) -> str:
    return (text or "").casefold()


def _recipient_candidates(recipients: list[tuple[str, str]]) -> list[str]:
    candidates = []
    for name, address in recipients or []:
        name, address = (name or "").strip(), (address or "").strip()
        if address:
            candidates.append(address)
        if name and address:
            candidates.append(f"{name} <{address}>")
        elif name:
            candidates.append(name)
    return candidates


def _candidates(spec: ConditionSpec, facts: EmailFacts) -> list[str]:
    """The texts a condition is tested against; an empty list means the field is empty."""
    field = spec.field
    if field == "to":
        return _recipient_candidates(facts.to)
    if field == "cc":
        return _recipient_candidates(facts.cc)
    if field == "header":
        wanted = (spec.header_name or "").strip().lower()
        return [
            _unfold(value or "")
            for name, value in facts.headers or []
            if (name or "").strip().lower() == wanted
        ]
    if field == "subject":
        return [_unfold(facts.subject or "")]
    if field == "sender_name":
        return [_unfold(facts.sender_name or "")]
    if field == "sender_address":
        return [(facts.sender_address or "").strip()]
    return [facts.text_body or ""]  # text_body


def _regex_search(pattern: str, text: str, budget: RegexBudget) -> bool:
    try:
        compiled = _compile(pattern)
    except ConditionError as exc:
        logger.warning("auto-response condition: regex %r is invalid: %s", pattern, exc)
        return False
    timeout = min(REGEX_TIMEOUT, budget.remaining)
    if timeout < _MIN_REGEX_TIMEOUT:  # used up (a float remainder is not time to search in)
        budget.timeouts += 1
        return False
    started = budget.clock()
    try:
        return compiled.search(text[:REGEX_INPUT_LIMIT], timeout=timeout) is not None
    except TimeoutError:
        budget.timeouts += 1
        logger.warning(
            "auto-response condition: regex %r timed out after %ss on %d characters; treated as no match",
            pattern,
            timeout,
            min(len(text), REGEX_INPUT_LIMIT),
        )
        return False
    finally:
        budget.remaining -= budget.clock() - started


def _positive_test(operator: str, value: str, budget: RegexBudget) -> Callable[[str], bool]:
    """The per-candidate test of a positive operator."""
    if operator == "regex":
        return lambda text: _regex_search(value, text, budget)
    wanted = _fold(value)
    if operator == "contains":
        return lambda text: wanted in _fold(text)
    if operator == "equals":
        stripped = wanted.strip()
        return lambda text: _fold(text).strip() == stripped
    # The field is stripped, so blanks on the outer side of the value could never match; the
    # inner side stays verbatim ("Re: " still requires the space).
    if operator == "starts_with":
        prefix = wanted.lstrip()
        return lambda text: _fold(text).strip().startswith(prefix)
    suffix = wanted.rstrip()
    return lambda text: _fold(text).strip().endswith(suffix)  # ends_with


def _is_valid_for_matching(spec: ConditionSpec) -> bool:
    if spec.field not in FIELDS or spec.operator not in OPERATORS:
        return False
    if spec.field == "header" and not (spec.header_name or "").strip():
        return False
    return spec.operator in _VALUELESS or bool((spec.value or "").strip())


def condition_matches(spec: ConditionSpec, facts: EmailFacts, budget: RegexBudget | None = None) -> bool:
    """Whether one condition holds for the email. Never raises (see the module docstring)."""
    budget = RegexBudget() if budget is None else budget
    if not _is_valid_for_matching(spec):
        logger.warning("auto-response condition %r is invalid and does not match", spec)
        return False
    candidates = _candidates(spec, facts)
    non_blank = [text for text in candidates if text.strip()]
    if spec.operator == "is_empty":
        return not non_blank
    if spec.operator == "is_not_empty":
        return bool(non_blank)
    if spec.operator == "not_contains":
        wanted = _fold(spec.value)
        return not any(wanted in _fold(text) for text in candidates)
    test = _positive_test(spec.operator, spec.value, budget)
    return any(test(text) for text in candidates)


def rule_matches(
    specs: list[ConditionSpec], match: str, facts: EmailFacts, budget: RegexBudget | None = None
) -> bool:
    """Whether a rule with these conditions and match mode ("all" / "any") matches the email.

    Pass the same `budget` for every rule of one email: it bounds their regex time together.
    """
    if match not in MATCH_MODES:
        logger.warning("auto-response rule has unknown match mode %r; it matches nothing", match)
        return False
    if not specs:
        return True
    budget = RegexBudget() if budget is None else budget
    results = (condition_matches(spec, facts, budget) for spec in specs)
    return all(results) if match == "all" else any(results)
