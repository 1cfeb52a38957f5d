"""Regular expressions written by admins, made safe to run on text from outside.

Pure Python: no ORM, no settings, no network. Two defences, because either alone is not enough:

* At save time `regex_check` refuses patterns that are too long, whose repetition counts would
  make the compiled pattern huge, that do not compile, or that backtrack catastrophically (ReDoS)
  on adversarial probe inputs.
* At match time `regex_search` gives each search at most `REGEX_TIMEOUT` seconds and the first
  `REGEX_INPUT_LIMIT` characters, and all searches for one email share one `RegexBudget` of
  `REGEX_EMAIL_BUDGET` seconds (200 recipients x 0.1 s would otherwise be 20 s). A timeout or a
  used-up budget counts as "no match" and is counted on the budget.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import regex

__all__ = [
    "REGEX_EMAIL_BUDGET",
    "REGEX_INPUT_LIMIT",
    "REGEX_MAX_LENGTH",
    "REGEX_TIMEOUT",
    "RegexBudget",
    "RegexRefused",
    "regex_check",
    "regex_search",
]

# The name the match-time warnings have always been logged under (before this module was split
# out of autoresponse.conditions): log filters and alerts keep working.
logger = logging.getLogger("autoresponse.conditions")

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


class RegexRefused(ValueError):
    """A pattern that must not be saved or run; the message is meant for the admin."""


@dataclass
class RegexBudget:
    """The regex time of one email, shared by all its searches (see the module docstring)."""

    remaining: float = REGEX_EMAIL_BUDGET
    clock: Callable[[], float] = time.monotonic
    #: Searches that timed out or were skipped because the budget was used up.
    timeouts: int = 0


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
                    raise RegexRefused(f"Repetition count {count} is too large (at most {_MAX_REPEAT}).")
                product = count * last_group
                if product > _MAX_REPEAT_PRODUCT:
                    raise RegexRefused(
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
    """Compile a pattern after the size checks; raises RegexRefused (not cached)."""
    if len(pattern) > REGEX_MAX_LENGTH:
        raise RegexRefused(
            f"The regular expression is too long ({len(pattern)} characters, at most {REGEX_MAX_LENGTH})."
        )
    _check_repeat_counts(pattern)
    try:
        return regex.compile(pattern, _FLAGS)
    # regex.error for syntax; Overflow/Value/Recursion for absurd counts, escapes or nesting.
    except (regex.error, OverflowError, ValueError, RecursionError) as exc:
        raise RegexRefused(f"The regular expression does not compile: {exc}") from None


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
            raise RegexRefused(
                "The regular expression is too slow on long inputs; simplify it (avoid nested "
                "repetition such as (a+)+ or (.*)*)."
            )
        try:
            compiled.search(text, timeout=min(_PROBE_TIMEOUT, remaining))
        except TimeoutError:
            raise RegexRefused(
                "The regular expression can take too long on some inputs (catastrophic "
                "backtracking); avoid nested repetition such as (a+)+ or (\\w+\\s?)+."
            ) from None


def regex_check(pattern: str) -> None:
    """Raise RegexRefused (message for the admin) if `pattern` must not be saved."""
    _probe(_compile(pattern))


def regex_search(pattern: str, text: str, budget: RegexBudget) -> bool:
    """Whether `pattern` is found in `text`, within what is left of `budget`. Never raises: an
    invalid pattern (saved before validation existed), a timeout or a used-up budget is no match."""
    try:
        compiled = _compile(pattern)
    except RegexRefused as exc:
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
