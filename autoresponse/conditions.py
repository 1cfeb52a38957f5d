"""Conditions of auto-response rules, evaluated against the facts of one incoming email.

Pure Python: no ORM, no settings, no network. The database layer turns `RuleCondition` rows into
`ConditionSpec` and an incoming `Email` into `EmailFacts`, then calls `rule_matches`. The fields,
operators and match modes are defined here once (`ConditionField`, `ConditionOperator`,
`MatchMode`, with their labels); the models use them as choices.

Every comparison is case-insensitive with Unicode case folding (``STRASSE`` equals ``straße``),
and header line folding (RFC 5322 §2.2.3) is undone first. A multi-valued field (``to``, ``cc``,
a header) holds when one of its values does, except that ``not_contains`` is the negation of
``contains`` over the whole field. Matching never raises: an invalid condition does not hold,
not even a negative one, and is logged; `validate_condition` refuses it earlier with a message
for the admin. Regex safety (save-time probing, the per-email time budget) is
`autoresponse.safe_regex`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from mailboxes.mime.headers import unfold as _unfold

from .safe_regex import RegexBudget, RegexRefused, regex_check, regex_search

__all__ = [
    "ConditionError",
    "ConditionField",
    "ConditionOperator",
    "ConditionSpec",
    "EmailFacts",
    "MatchMode",
    "condition_matches",
    "rule_matches",
    "validate_condition",
]

logger = logging.getLogger(__name__)


class ConditionField(StrEnum):
    SUBJECT = "subject"
    TEXT_BODY = "text_body"
    SENDER_ADDRESS = "sender_address"
    SENDER_NAME = "sender_name"
    TO = "to"
    CC = "cc"
    HEADER = "header"

    @property
    def label(self) -> str:
        return _FIELD_LABELS[self]


class ConditionOperator(StrEnum):
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    EQUALS = "equals"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    REGEX = "regex"
    IS_EMPTY = "is_empty"
    IS_NOT_EMPTY = "is_not_empty"

    @property
    def label(self) -> str:
        return _OPERATORS[self].label


class MatchMode(StrEnum):
    ALL = "all"
    ANY = "any"

    @property
    def label(self) -> str:
        return _MATCH_MODE_LABELS[self]


_FIELD_LABELS = {
    ConditionField.SUBJECT: "Subject",
    ConditionField.TEXT_BODY: "Text body",
    ConditionField.SENDER_ADDRESS: "Sender address",
    ConditionField.SENDER_NAME: "Sender name",
    ConditionField.TO: "To",
    ConditionField.CC: "Cc",
    ConditionField.HEADER: "Header (named)",
}

_MATCH_MODE_LABELS = {MatchMode.ALL: "All conditions", MatchMode.ANY: "Any condition"}


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


# --------------------------------------------------------------------------- operators


def _fold(text: str) -> str:
    return (text or "").casefold()


#: How an operator decides on the candidate texts of a field (an empty list: the field is empty).
_Test = Callable[[list[str], str, RegexBudget], bool]


def _contains(candidates: list[str], value: str, _budget: RegexBudget) -> bool:
    # The value is used verbatim: a value "Re: " requires the space.
    wanted = _fold(value)
    return any(wanted in _fold(text) for text in candidates)


def _not_contains(candidates: list[str], value: str, budget: RegexBudget) -> bool:
    # The negation of contains over the whole field: no candidate contains the value.
    return not _contains(candidates, value, budget)


def _equals(candidates: list[str], value: str, _budget: RegexBudget) -> bool:
    wanted = _fold(value).strip()
    return any(_fold(text).strip() == wanted for text in candidates)


# The field is stripped (a body's trailing newline must not defeat ends_with), so blanks on the
# outer side of the value could never match; the inner side stays verbatim ("Re: " as a prefix
# still requires the space).
def _starts_with(candidates: list[str], value: str, _budget: RegexBudget) -> bool:
    prefix = _fold(value).lstrip()
    return any(_fold(text).strip().startswith(prefix) for text in candidates)


def _ends_with(candidates: list[str], value: str, _budget: RegexBudget) -> bool:
    suffix = _fold(value).rstrip()
    return any(_fold(text).strip().endswith(suffix) for text in candidates)


def _regex(candidates: list[str], value: str, budget: RegexBudget) -> bool:
    # Searched anywhere in the text (anchors are the admin's), within the email's budget.
    return any(regex_search(value, text, budget) for text in candidates)


# A text is empty when it is blank (only whitespace); the value is ignored.
def _is_empty(candidates: list[str], _value: str, _budget: RegexBudget) -> bool:
    return not any(text.strip() for text in candidates)


def _is_not_empty(candidates: list[str], _value: str, _budget: RegexBudget) -> bool:
    return any(text.strip() for text in candidates)


@dataclass(frozen=True)
class _Operator:
    label: str
    test: _Test
    needs_value: bool = True


#: The one table of operators: label for the admin, behaviour, whether a value is needed.
_OPERATORS: dict[ConditionOperator, _Operator] = {
    ConditionOperator.CONTAINS: _Operator("contains", _contains),
    ConditionOperator.NOT_CONTAINS: _Operator("does not contain", _not_contains),
    ConditionOperator.EQUALS: _Operator("equals", _equals),
    ConditionOperator.STARTS_WITH: _Operator("starts with", _starts_with),
    ConditionOperator.ENDS_WITH: _Operator("ends with", _ends_with),
    ConditionOperator.REGEX: _Operator("matches regular expression", _regex),
    ConditionOperator.IS_EMPTY: _Operator("is empty", _is_empty, needs_value=False),
    ConditionOperator.IS_NOT_EMPTY: _Operator("is not empty", _is_not_empty, needs_value=False),
}


# --------------------------------------------------------------------------- validation


def _valid_header_name(name: str) -> bool:
    # RFC 5322 §3.6.8: printable US-ASCII except colon.
    return bool(name) and all(33 <= ord(ch) <= 126 and ch != ":" for ch in name)


def validate_condition(spec: ConditionSpec) -> None:
    """Raise ConditionError (message for the admin) if `spec` cannot be saved."""
    if spec.field not in _FIELD_LABELS:
        raise ConditionError(f"Unknown field {spec.field!r}.")
    if spec.operator not in _OPERATORS:
        raise ConditionError(f"Unknown operator {spec.operator!r}.")
    if spec.field == ConditionField.HEADER:
        name = (spec.header_name or "").strip()
        if not name:
            raise ConditionError("A header condition needs the header name (e.g. X-Priority).")
        if not _valid_header_name(name):
            raise ConditionError(f"{name!r} is not a valid header name.")
    if not _OPERATORS[ConditionOperator(spec.operator)].needs_value:
        return
    if not (spec.value or "").strip():
        raise ConditionError("This operator needs a value.")
    if spec.operator == ConditionOperator.REGEX:
        try:
            regex_check(spec.value)
        except RegexRefused as exc:
            raise ConditionError(str(exc)) from None


# --------------------------------------------------------------------------- matching


def _recipient_candidates(recipients: list[tuple[str, str]]) -> list[str]:
    """One text per recipient and per form: the bare address and, with a display name,
    ``Jane Doe <jane@example.com>``."""
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
    """The texts a condition is tested against; an empty list means the field is empty (an
    absent header, no recipients)."""
    field = spec.field
    if field == ConditionField.TO:
        return _recipient_candidates(facts.to)
    if field == ConditionField.CC:
        return _recipient_candidates(facts.cc)
    if field == ConditionField.HEADER:
        wanted = (spec.header_name or "").strip().lower()
        return [
            _unfold(value or "")
            for name, value in facts.headers or []
            if (name or "").strip().lower() == wanted
        ]
    if field == ConditionField.SUBJECT:
        return [_unfold(facts.subject or "")]
    if field == ConditionField.SENDER_NAME:
        return [_unfold(facts.sender_name or "")]
    if field == ConditionField.SENDER_ADDRESS:
        return [(facts.sender_address or "").strip()]
    return [facts.text_body or ""]  # text_body


def _operator_for_matching(spec: ConditionSpec) -> _Operator | None:
    """The operator of a condition that can be evaluated, else None."""
    if spec.field not in _FIELD_LABELS or spec.operator not in _OPERATORS:
        return None
    if spec.field == ConditionField.HEADER and not (spec.header_name or "").strip():
        return None
    operator = _OPERATORS[ConditionOperator(spec.operator)]
    if operator.needs_value and not (spec.value or "").strip():
        return None
    return operator


def condition_matches(spec: ConditionSpec, facts: EmailFacts, budget: RegexBudget | None = None) -> bool:
    """Whether one condition holds for the email. Never raises (see the module docstring)."""
    budget = RegexBudget() if budget is None else budget
    operator = _operator_for_matching(spec)
    if operator is None:
        logger.warning("auto-response condition %r is invalid and does not match", spec)
        return False
    return operator.test(_candidates(spec, facts), spec.value, budget)


def rule_matches(
    specs: list[ConditionSpec], match: str, facts: EmailFacts, budget: RegexBudget | None = None
) -> bool:
    """Whether a rule with these conditions and match mode ("all" / "any") matches the email.

    A rule without conditions matches every email; an unknown match mode matches nothing. Pass
    the same `budget` for every rule of one email: it bounds their regex time together.
    """
    if match not in _MATCH_MODE_LABELS:
        logger.warning("auto-response rule has unknown match mode %r; it matches nothing", match)
        return False
    if not specs:
        return True
    budget = RegexBudget() if budget is None else budget
    results = (condition_matches(spec, facts, budget) for spec in specs)
    return all(results) if match == MatchMode.ALL else any(results)
