"""Conditions of auto-response rules: every operator on every field, match modes, regex safety."""

import logging

import pytest

from autoresponse.conditions import (
    ConditionError,
    ConditionField,
    ConditionOperator,
    ConditionSpec,
    EmailFacts,
    condition_matches,
    rule_matches,
    validate_condition,
)
from autoresponse.safe_regex import REGEX_INPUT_LIMIT

FACTS = EmailFacts(
    subject="Re: Order 4711 - Invoice missing",
    text_body="Hello team,\nplease send the INVOICE for order 4711.\nThanks\n",
    sender_address="Jane.Doe@Example.com",
    sender_name="Jane Doe",
    to=[("Support Team", "support@acme.test")],
    cc=[("", "billing@acme.test")],
    headers=[
        ("X-Priority", "1 (Highest)"),
        ("Received", "from mx1.example.com"),
        ("Received", "from mx2.example.com"),
        ("X-Folded", "first part\r\n second part"),
    ],
)

EMPTY = EmailFacts(
    subject="  ",
    text_body="\n\n",
    sender_address="",
    sender_name="",
    to=[],
    cc=[],
    headers=[("X-Priority", "   ")],
)

# For every field, every operator once matching and once not matching FACTS. Values mix upper and
# lower case on purpose: every comparison is case-insensitive.
TABLE = {
    "subject": [
        ("contains", "INVOICE", True),
        ("contains", "refund", False),
        ("not_contains", "refund", True),
        ("not_contains", "invoice", False),
        ("equals", "  re: order 4711 - invoice MISSING ", True),
        ("equals", "Order 4711", False),
        ("starts_with", "RE: ", True),
        ("starts_with", "Order", False),
        ("ends_with", "MISSING", True),
        ("ends_with", "Order", False),
        ("regex", r"order\s+\d{4}", True),
        ("regex", r"^order", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "text_body": [
        ("contains", "invoice for ORDER", True),
        ("contains", "refund", False),
        ("not_contains", "refund", True),
        ("not_contains", "thanks", False),
        ("equals", "hello team,\nplease send the invoice for order 4711.\nthanks", True),
        ("equals", "hello team", False),
        ("starts_with", "HELLO", True),
        ("starts_with", "please", False),
        ("ends_with", "thanks", True),
        ("ends_with", "4711.", False),
        ("regex", r"(?m)^please send", True),
        ("regex", r"^please send", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "sender_address": [
        ("contains", "@EXAMPLE", True),
        ("contains", "acme", False),
        ("not_contains", "acme", True),
        ("not_contains", "JANE", False),
        ("equals", "jane.doe@example.com", True),
        ("equals", "jane@example.com", False),
        ("starts_with", "JANE.", True),
        ("starts_with", "doe", False),
        ("ends_with", "example.COM", True),
        ("ends_with", "example", False),
        ("regex", r"^[a-z.]+@example\.com$", True),
        ("regex", r"^doe", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "sender_name": [
        ("contains", "DOE", True),
        ("contains", "smith", False),
        ("not_contains", "smith", True),
        ("not_contains", "jane", False),
        ("equals", "jane doe", True),
        ("equals", "jane", False),
        ("starts_with", "jane", True),
        ("starts_with", "doe", False),
        ("ends_with", "DOE", True),
        ("ends_with", "jane", False),
        ("regex", r"^jane\s+d", True),
        ("regex", r"smith", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "to": [
        ("contains", "SUPPORT@", True),
        ("contains", "sales@", False),
        ("not_contains", "sales", True),
        ("not_contains", "support team", False),  # found in the "Name <address>" form
        ("equals", "Support@Acme.test", True),  # the bare address form
        ("equals", "support", False),
        ("starts_with", "support team <", True),
        ("starts_with", "acme", False),
        ("ends_with", "@ACME.TEST", True),
        ("ends_with", "@acme", False),
        ("regex", r"^support team <support@acme\.test>$", True),
        ("regex", r"^billing@", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "cc": [
        ("contains", "BILLING", True),
        ("contains", "support", False),
        ("not_contains", "support", True),
        ("not_contains", "acme", False),
        ("equals", "billing@acme.test", True),
        ("equals", "billing", False),
        ("starts_with", "billing@", True),
        ("starts_with", "acme", False),
        ("ends_with", ".test", True),
        ("ends_with", ".com", False),
        ("regex", r"bill(ing)?@", True),
        ("regex", r"<", False),  # no display name, so no "Name <address>" form
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
    "header": [
        ("contains", "highest", True),
        ("contains", "lowest", False),
        ("not_contains", "lowest", True),
        ("not_contains", "HIGHEST", False),
        ("equals", " 1 (highest) ", True),
        ("equals", "1", False),
        ("starts_with", "1 (", True),
        ("starts_with", "(", False),
        ("ends_with", "(HIGHEST)", True),
        ("ends_with", "1", False),
        ("regex", r"^\d \(", True),
        ("regex", r"^\d{2}", False),
        ("is_empty", "", False),
        ("is_not_empty", "", True),
    ],
}

CASES = [
    pytest.param(field, operator, value, expected, id=f"{field}-{operator}-{expected}")
    for field, rows in TABLE.items()
    for operator, value, expected in rows
]


def spec(field, operator, value="", header_name=""):
    if field == "header" and not header_name:
        header_name = "X-Priority"
    return ConditionSpec(field=field, operator=operator, value=value, header_name=header_name)


def test_the_table_covers_every_operator_on_every_field_both_ways():
    covered = {(field, operator, expected) for field, operator, _value, expected in (c.values for c in CASES)}
    positive = {"contains", "not_contains", "equals", "starts_with", "ends_with", "regex", "is_not_empty"}
    for field in ConditionField:
        for operator in ConditionOperator:
            if operator in ("is_empty", "is_not_empty"):
                assert (field, operator, operator in positive) in covered
            else:
                assert (field, operator, True) in covered
                assert (field, operator, False) in covered


@pytest.mark.parametrize(("field", "operator", "value", "expected"), CASES)
def test_operator_on_field(field, operator, value, expected):
    condition = spec(field, operator, value)
    validate_condition(condition)
    assert condition_matches(condition, FACTS) is expected


# On an email where every field is empty (or blank): the empty-field semantics.
EMPTY_CASES = [
    pytest.param(field, operator, value, expected, id=f"{field}-{operator}")
    for field in ConditionField
    for operator, value, expected in (
        ("is_empty", "", True),
        ("is_not_empty", "", False),
        ("contains", "a", False),
        ("not_contains", "a", True),
        ("equals", "a", False),
        ("starts_with", "a", False),
        ("ends_with", "a", False),
        ("regex", "a", False),
    )
]


@pytest.mark.parametrize(("field", "operator", "value", "expected"), EMPTY_CASES)
def test_operator_on_empty_field(field, operator, value, expected):
    assert condition_matches(spec(field, operator, value), EMPTY) is expected


def test_regex_matching_everything_also_matches_an_empty_field_only_as_text():
    # ".*" matches the empty subject text, but a field without recipients has no text at all.
    assert condition_matches(spec("subject", "regex", ".*"), EMPTY) is True
    assert condition_matches(spec("to", "regex", ".*"), EMPTY) is False


def test_absent_header_is_empty():
    assert condition_matches(spec("header", "is_empty", header_name="X-Spam-Flag"), FACTS) is True
    assert condition_matches(spec("header", "is_not_empty", header_name="X-Spam-Flag"), FACTS) is False
    assert condition_matches(spec("header", "contains", "yes", "X-Spam-Flag"), FACTS) is False
    assert condition_matches(spec("header", "not_contains", "yes", "X-Spam-Flag"), FACTS) is True


def test_header_name_is_case_insensitive():
    assert condition_matches(spec("header", "contains", "highest", "x-PRIORITY"), FACTS) is True


def test_header_with_several_values_matches_any_value_and_negates_over_all():
    assert condition_matches(spec("header", "equals", "from mx2.example.com", "Received"), FACTS) is True
    assert condition_matches(spec("header", "contains", "mx1", "received"), FACTS) is True
    assert condition_matches(spec("header", "not_contains", "mx2", "Received"), FACTS) is False
    assert condition_matches(spec("header", "not_contains", "mx3", "Received"), FACTS) is True


def test_folded_header_value_is_unfolded():
    assert condition_matches(spec("header", "equals", "first part second part", "X-Folded"), FACTS) is True
    assert condition_matches(spec("header", "contains", "\n", "X-Folded"), FACTS) is False


def test_recipients_match_in_both_forms_and_any_recipient():
    facts = EmailFacts(
        subject="",
        text_body="",
        sender_address="a@b.test",
        sender_name="",
        to=[("Alice", "alice@x.test"), ("Bob Builder", "bob@y.test")],
        cc=[],
        headers=[],
    )
    assert condition_matches(spec("to", "equals", "bob builder <BOB@y.test>"), facts) is True
    assert condition_matches(spec("to", "equals", "bob@y.test"), facts) is True
    assert condition_matches(spec("to", "ends_with", "@x.test"), facts) is True
    assert condition_matches(spec("to", "not_contains", "y.test"), facts) is False
    assert condition_matches(spec("to", "not_contains", "z.test"), facts) is True


def test_case_insensitivity_uses_case_folding():
    facts = EmailFacts("Hauptstraße 5", "", "x@y.test", "", [], [], [])
    assert condition_matches(spec("subject", "contains", "HAUPTSTRASSE"), facts) is True
    assert condition_matches(spec("subject", "regex", "STRASSE"), facts) is True
    assert condition_matches(spec("subject", "equals", "HAUPTSTRASSE 5"), facts) is True
    assert condition_matches(spec("subject", "contains", "HAUPTSTRASE"), facts) is False


def test_starts_with_value_keeps_its_inner_space():
    facts = EmailFacts("Re:Order", "", "x@y.test", "", [], [], [])
    assert condition_matches(spec("subject", "starts_with", "re: "), facts) is False
    assert condition_matches(spec("subject", "starts_with", "  re:"), facts) is True


# --------------------------------------------------------------------------- rules


def test_rule_without_conditions_matches_every_email():
    assert rule_matches([], "all", FACTS) is True
    assert rule_matches([], "any", EMPTY) is True


def test_all_needs_every_condition():
    hit, miss = spec("subject", "contains", "invoice"), spec("subject", "contains", "refund")
    assert rule_matches([hit, hit], "all", FACTS) is True
    assert rule_matches([hit, miss], "all", FACTS) is False


def test_any_needs_one_condition():
    hit, miss = spec("subject", "contains", "invoice"), spec("subject", "contains", "refund")
    assert rule_matches([miss, hit], "any", FACTS) is True
    assert rule_matches([miss, miss], "any", FACTS) is False


def test_unknown_match_mode_matches_nothing():
    assert rule_matches([], "most", FACTS) is False


def test_invalid_condition_never_matches_and_never_raises():
    assert condition_matches(ConditionSpec("subject", "sounds_like", "x"), FACTS) is False
    assert condition_matches(ConditionSpec("color", "contains", "x"), FACTS) is False
    assert condition_matches(ConditionSpec("subject", "not_contains", ""), FACTS) is False
    assert condition_matches(ConditionSpec("header", "is_empty"), FACTS) is False
    assert condition_matches(ConditionSpec("subject", "regex", "(unclosed"), FACTS) is False
    assert rule_matches([ConditionSpec("subject", "regex", "(")], "any", FACTS) is False


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (ConditionSpec("color", "contains", "x"), "Unknown field 'color'."),
        (ConditionSpec("subject", "sounds_like", "x"), "Unknown operator 'sounds_like'."),
        (ConditionSpec("header", "contains", "x"), "A header condition needs the header name"),
        (ConditionSpec("header", "contains", "x", "X Priority"), "'X Priority' is not a valid header name."),
        (ConditionSpec("subject", "contains", ""), "This operator needs a value."),
        (ConditionSpec("subject", "equals", "   "), "This operator needs a value."),
        (ConditionSpec("subject", "regex", ""), "This operator needs a value."),
        (ConditionSpec("subject", "regex", "(unclosed"), "The regular expression does not compile:"),
        (ConditionSpec("subject", "regex", "x" * 501), "The regular expression is too long (501 characters"),
        (ConditionSpec("subject", "regex", "a{1001}"), "Repetition count 1001 is too large"),
        (ConditionSpec("subject", "regex", "(?:a{1000}){1000}"), "Nested repetition counts are too large"),
        (
            ConditionSpec("subject", "regex", "(a+)+$"),
            "The regular expression can take too long on some inputs (catastrophic backtracking)",
        ),
        (
            ConditionSpec("subject", "regex", r"(\w+\s?)+$"),
            "The regular expression can take too long on some inputs (catastrophic backtracking)",
        ),
        (
            ConditionSpec("text_body", "regex", "(a|aa)+$"),
            "The regular expression can take too long on some inputs (catastrophic backtracking)",
        ),
        (
            ConditionSpec("text_body", "regex", "(x+x+)+y"),
            "The regular expression can take too long on some inputs (catastrophic backtracking)",
        ),
    ],
)
def test_validation_refuses(condition, message):
    with pytest.raises(ConditionError) as excinfo:
        validate_condition(condition)
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize(
    "condition",
    [
        ConditionSpec("subject", "regex", r"invoice\s*#?\d+"),
        ConditionSpec("subject", "regex", r"^(re|fwd?):"),
        ConditionSpec("subject", "regex", r"(?:a{100}){100}"),
        ConditionSpec("sender_address", "regex", r"@(example|acme)\.(com|test)$"),
        ConditionSpec("subject", "is_empty"),
        ConditionSpec("header", "is_not_empty", header_name="List-Id"),
        ConditionSpec("to", "equals", "support@acme.test", header_name="ignored unless header"),
    ],
)
def test_validation_accepts(condition):
    assert validate_condition(condition) is None


def test_slow_regex_at_match_time_is_no_match_and_logged(caplog):
    # Saved before validation existed (or in a direct database edit): matching must survive it.
    slow = spec("text_body", "regex", "(a+)+$")
    facts = EmailFacts("", "a" * 50_000 + "!", "x@y.test", "", [], [], [])
    with caplog.at_level(logging.WARNING, logger="autoresponse.conditions"):
        assert condition_matches(slow, facts) is False
    assert "timed out" in caplog.text
    # The same pattern on harmless input still works: the False above is the timeout.
    assert condition_matches(slow, EmailFacts("", "aaaa", "x@y.test", "", [], [], [])) is True


def test_regex_sees_only_the_start_of_a_huge_body_but_contains_sees_all():
    facts = EmailFacts("", "x" * REGEX_INPUT_LIMIT + "NEEDLE", "x@y.test", "", [], [], [])
    assert condition_matches(spec("text_body", "regex", "needle"), facts) is False
    assert condition_matches(spec("text_body", "contains", "needle"), facts) is True


# --------------------------------------------------------------------------- one regex budget per email


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class SlowPattern:
    """Stands in for a compiled regex that always uses its whole timeout, then times out."""

    def __init__(self, clock):
        self.clock, self.timeouts = clock, []

    def search(self, text, timeout):
        self.timeouts.append(timeout)
        self.clock.now += timeout
        raise TimeoutError


def many_recipients(count=200):
    return EmailFacts(
        subject="s",
        text_body="b",
        sender_address="a@x.test",
        sender_name="",
        to=[(f"Person {n}", f"p{n}@x.test") for n in range(count)],
        cc=[],
        headers=[],
    )


def test_one_budget_bounds_all_regex_searches_of_an_email(monkeypatch):
    from autoresponse import safe_regex

    clock = FakeClock()
    slow = SlowPattern(clock)
    monkeypatch.setattr(safe_regex, "_compile", lambda pattern: slow)
    budget = safe_regex.RegexBudget(clock=clock)
    spec = ConditionSpec(field="to", operator="regex", value="slow")
    facts = many_recipients()
    # Two rules of the same email share the budget: the second runs no search at all.
    assert rule_matches([spec], "all", facts, budget) is False
    assert rule_matches([spec, spec], "any", facts, budget) is False
    assert slow.timeouts == [safe_regex.REGEX_TIMEOUT] * 5  # 0.5 s in all, not 400 x 0.1 s
    assert sum(slow.timeouts) == pytest.approx(safe_regex.REGEX_EMAIL_BUDGET)
    assert budget.timeouts == 5 + (400 - 5) + 2 * 400  # every skipped candidate counts


def test_each_search_gets_only_what_is_left_of_the_budget(monkeypatch):
    from autoresponse import safe_regex

    clock = FakeClock()
    slow = SlowPattern(clock)
    monkeypatch.setattr(safe_regex, "_compile", lambda pattern: slow)
    budget = safe_regex.RegexBudget(remaining=0.25, clock=clock)
    condition_matches(ConditionSpec(field="to", operator="regex", value="slow"), many_recipients(3), budget)
    assert slow.timeouts == pytest.approx([0.1, 0.1, 0.05])


# --------------------------------------------------------------------------- one definition


def test_the_models_offer_exactly_the_fields_operators_and_modes_of_the_pure_module():
    from autoresponse.conditions import MatchMode
    from autoresponse.models import AutoResponseRule, RuleCondition

    def choices(model, name):
        return model._meta.get_field(name).choices

    assert choices(RuleCondition, "field") == [(member.value, member.label) for member in ConditionField]
    assert choices(RuleCondition, "operator") == [
        (member.value, member.label) for member in ConditionOperator
    ]
    assert choices(AutoResponseRule, "match") == [("all", "All conditions"), ("any", "Any condition")]
    assert [member.value for member in MatchMode] == ["all", "any"]


@pytest.mark.parametrize("operator", list(ConditionOperator))
def test_every_operator_is_validated_and_evaluated_by_the_one_table(operator):
    # Valueless operators need no value; every other one refuses a blank value.
    needs_value = operator not in (ConditionOperator.IS_EMPTY, ConditionOperator.IS_NOT_EMPTY)
    blank = spec("subject", operator, "")
    if needs_value:
        with pytest.raises(ConditionError, match="needs a value"):
            validate_condition(blank)
        assert condition_matches(blank, FACTS) is False
    else:
        validate_condition(blank)
        assert condition_matches(blank, FACTS) is (operator == ConditionOperator.IS_NOT_EMPTY)
