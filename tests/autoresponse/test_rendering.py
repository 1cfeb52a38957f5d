"""Auto-response templates: rendering, validation at save time, the sandbox and its limits."""

from datetime import datetime

import pytest

from autoresponse import rendering, sandbox
from autoresponse.rendering import (
    ALLOWED_VARIABLES,
    TemplateProblem,
    header_value_safe,
    sample_context,
    template_render,
    template_validate,
)
from autoresponse.sandbox import MAX_LOOP_ITERATIONS, MAX_OUTPUT_CHARS


def context(**email_changes):
    ctx = sample_context()
    ctx["email"].update(email_changes)
    return ctx


def render(source, ctx=None, *, html=False):
    return template_render(source, sample_context() if ctx is None else ctx, html=html)


# --------------------------------------------------------------------------- rendering


def test_variables_render():
    source = (
        "Hello {{ email.sender_name }} <{{ email.sender_address }}>, "
        "{{ mailbox.label }} ({{ mailbox.address }}) got {{ email.subject }} "
        "on {{ email.date.strftime('%d.%m.%Y') }}: case {{ case.reference }} ({{ case.number + 1 }}, "
        "{{ case.status }}), lead {{ lead.name }} {{ lead.status }}"
    )
    assert render(source) == (
        "Hello Jane Doe <jane.doe@example.com>, Customer Support (support@example.com) got "
        "Order 2024-0815: wrong size delivered on 14.03.2025: case #1042 (1043, open), "
        "lead Jane Doe new"
    )


def test_html_mode_escapes_values_but_not_the_template_markup():
    ctx = context(subject="<script>alert(1)</script> & co")
    assert (
        render("<p>Re: {{ email.subject }}</p>", ctx, html=True)
        == "<p>Re: &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"
    )


def test_text_mode_does_not_escape():
    ctx = context(subject="<script>alert(1)</script> & co")
    assert render("Re: {{ email.subject }}", ctx) == "Re: <script>alert(1)</script> & co"


def test_optional_parts_can_be_tested_and_tag_lines_leave_no_blank_line():
    source = "Hi\n{% if case %}\nCase {{ case.reference }}\n{% endif %}\nBye\n"
    assert render(source) == "Hi\nCase #1042\nBye\n"
    ctx = sample_context()
    ctx["case"] = None
    assert render(source, ctx) == "Hi\nBye\n"


def test_unguarded_missing_case_is_a_clear_problem_at_render():
    ctx = sample_context()
    ctx["case"] = None
    with pytest.raises(TemplateProblem) as excinfo:
        render("Hello\n\nYour case: {{ case.reference }}", ctx)
    assert excinfo.value.line == 3
    assert str(excinfo.value).startswith(
        "line 3: 'None' has no attribute 'reference' (a part that is optional"
    )


def test_missing_and_extra_context_keys():
    # A key the caller did not give is None; keys other than the four are not visible.
    ctx = {"email": {"subject": "Hi"}, "mailbox": {"label": "S", "address": "s@x.test"}, "secret": "x"}
    assert render("{{ email.subject }} {{ 'no case' if not case }}", ctx) == "Hi no case"
    with pytest.raises(TemplateProblem) as excinfo:
        render("{{ secret }}", ctx)
    assert str(excinfo.value) == "line 1: unknown variable 'secret' (available: email, mailbox, case, lead)"


def test_date_may_be_none():
    assert render("{{ email.date.year if email.date else 'unknown' }}", context(date=None)) == "unknown"


def test_range_and_loops_work_within_limits():
    assert render("{% for i in range(3) %}{{ i }}{% endfor %}") == "012"
    assert (
        render("{% for line in email.text.splitlines()[:2] %}> {{ line }}\n{% endfor %}") == "> Hello,\n> \n"
    )


def test_output_is_plain_str():
    assert type(render("<b>{{ email.subject }}</b>", html=True)) is str


def test_problem_message_format():
    assert str(TemplateProblem("boom", 3)) == "line 3: boom"
    assert str(TemplateProblem("boom")) == "boom"
    assert TemplateProblem("boom", 3).line == 3
    assert isinstance(TemplateProblem("boom"), ValueError)


def test_runtime_error_carries_its_line():
    with pytest.raises(TemplateProblem) as excinfo:
        render("a\nb\n{{ 1 / 0 }}")
    assert str(excinfo.value) == "line 3: ZeroDivisionError: division by zero"


# --------------------------------------------------------------------------- validation


def test_valid_template_passes():
    assert template_validate("Re: {{ email.subject }} [{{ case.reference }}]", html=False) is None
    assert (
        template_validate("<p>{{ email.text|e }}</p>{% if lead %}{{ lead.name }}{% endif %}", html=True)
        is None
    )


def test_syntax_error_with_its_line():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("Hello\n\n{% if case %}\n{{ case.reference }\n{% endif %}\n", html=False)
    assert excinfo.value.line == 4
    assert str(excinfo.value).startswith("line 4: unexpected '}'")


def test_unclosed_block_is_a_syntax_error():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("Hi\n{% if case %}\nopen", html=False)
    assert str(excinfo.value).startswith("line 3: Unexpected end of template.")


def test_unknown_variable_is_named_with_its_line():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("Dear customer,\n{{ customer.name }}", html=False)
    assert str(excinfo.value) == "line 2: unknown variable 'customer' (available: email, mailbox, case, lead)"


def test_attribute_typo_is_caught_at_validation_with_its_line():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("Hi\n\n{{ email.subjetc }}", html=True)
    assert str(excinfo.value) == "line 3: 'dict object' has no attribute 'subjetc'"


def test_typo_inside_guarded_branch_is_caught():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("{% if case %}\n{{ case.refrence }}\n{% endif %}", html=False)
    assert str(excinfo.value) == "line 2: 'dict object' has no attribute 'refrence'"


def test_typo_in_branch_taken_only_without_case_is_caught():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("{% if not case %}{{ email.sender_nmae }}{% endif %}", html=False)
    assert str(excinfo.value) == "line 1: 'dict object' has no attribute 'sender_nmae'"


def test_unguarded_optional_part_is_accepted_at_validation():
    assert template_validate("Your case {{ case.reference }} / {{ email.date.year }}", html=False) is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ email.subject|safe }}", "line 1: No filter named 'safe'."),
        ("{% autoescape false %}{{ email.subject }}{% endautoescape %}", "line 1: 'autoescape' blocks are"),
        ("x\n{% include 'other.txt' %}", "line 2: 'include' is not available"),
        ("{% extends 'base.txt' %}", "line 1: 'extends' is not available"),
        ("{% import 'm.txt' as m %}", "line 1: 'import' is not available"),
        ("{% for x in [1] recursive %}{{ loop([]) }}{% endfor %}", "line 1: recursive loops are not allowed"),
        ("{{ lipsum() }}", "line 1: unknown variable 'lipsum'"),
        ("{{ namespace() }}", "line 1: unknown variable 'namespace'"),
        ("{{ joiner() }}", "line 1: unknown variable 'joiner'"),
        ("{{ dict(a=1) }}", "line 1: unknown variable 'dict'"),
    ],
)
def test_unavailable_features_are_refused(source, message):
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate(source, html=True)
    assert str(excinfo.value).startswith(message)


def test_too_long_template_is_refused():
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate("x" * 100_001, html=False)
    assert str(excinfo.value) == "the template is too long (at most 100000 characters)"


# --------------------------------------------------------------------------- sandbox

SANDBOX_PAYLOADS = [
    ("{{ ''.__class__.__mro__ }}", "not allowed: access to attribute '__class__' of 'str' object is unsafe."),
    ("{{ email.__class__ }}", "not allowed: access to attribute '__class__' of 'dict' object is unsafe."),
    (
        "{{ ().__class__.__base__.__subclasses__() }}",
        "not allowed: access to attribute '__class__' of 'tuple' object is unsafe.",
    ),
    ("{{ cycler.__init__.__globals__ }}", "unknown variable 'cycler'"),
    (
        "{{ self._TemplateReference__context }}",
        "not allowed: access to attribute '_TemplateReference__context' of 'TemplateReference' object"
        " is unsafe.",
    ),
    ("{{ email.subject._private }}", "'str object' has no attribute '_private'"),
    (
        "{{ email.subject.__len__() }}",
        "not allowed: access to attribute '__len__' of 'str' object is unsafe.",
    ),
    ("{{ email['__class__'] }}", "not allowed: access to attribute '__class__' of 'dict' object is unsafe."),
    (
        "{{ email|attr('__class__') }}",
        "not allowed: access to attribute '__class__' of 'dict' object is unsafe.",
    ),
    (
        "{{ range.__globals__ }}",
        "not allowed: access to attribute '__globals__' of 'function' object is unsafe.",
    ),
    (
        "{{ email.date.__class__.__init__.__globals__ }}",
        "not allowed: access to attribute '__class__' of 'datetime' object is unsafe.",
    ),
    (
        "{{ email.update(subject='x') }}",
        "not allowed: access to attribute 'update' of 'dict' object is unsafe.",
    ),
    ("{{ email.text.format.__globals__ }}", "not allowed: access to attribute '__globals__'"),
]


@pytest.mark.parametrize(("source", "message"), SANDBOX_PAYLOADS)
def test_sandbox_payload_fails_safely_at_render(source, message):
    ctx = sample_context()
    with pytest.raises(TemplateProblem) as excinfo:
        template_render(source, ctx, html=False)
    assert str(excinfo.value).startswith("line 1: " + message)
    assert ctx == sample_context()  # nothing was changed either


@pytest.mark.parametrize(("source", "message"), SANDBOX_PAYLOADS)
def test_sandbox_payload_is_refused_at_validation(source, message):
    with pytest.raises(TemplateProblem) as excinfo:
        template_validate(source, html=True)
    assert str(excinfo.value).startswith("line 1: " + message)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' + 1 }}",
        "{% for x in 5 %}{% endfor %}",
        "{{ none.x }}",
        "{{ 1.5|round(method='sideways') }}",
        "{{ '{' .format(1) }}",
        "{{ email.subject[10**20] }}",
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "{{ email.text|wordwrap(0) }}",
    ],
)
def test_any_other_error_is_a_template_problem(source):
    with pytest.raises(TemplateProblem):
        render(source)


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 10**9 }}", "line 1: limit exceeded: the repetition would build too large a value"),
        ("{{ [1] * 10**9 }}", "line 1: limit exceeded: the repetition would build too large a value"),
        ("{{ 9 ** (10 ** 9) }}", "line 1: limit exceeded: the power is too large a number"),
        ("{% for i in range(10**9) %}{% endfor %}", "line 1: limit exceeded: Range too big."),
        (
            "{% for i in range(400) %}{% for j in range(400) %}{% endfor %}{% endfor %}",
            f"line 1: limit exceeded: the template's loops ran more than {MAX_LOOP_ITERATIONS} times",
        ),
        ("{{ 'x'|center(10**9) }}", "line 1: limit exceeded: width 1000000000 is too large"),
        ("{{ 'x'.ljust(10**9) }}", "line 1: limit exceeded: width 1000000000 is too large"),
        ("{{ '%0999999999d' % 1 }}", "line 1: limit exceeded: format width 999999999 is too large"),
        ("{{ '%*d' % (10**9, 1) }}", "line 1: not allowed: '*' widths in format strings are not allowed"),
        ("{{ '{:>999999999}'.format(1) }}", "line 1: limit exceeded: format width 999999999 is too large"),
        (
            "{{ email.date.strftime('%999999999Y') }}",
            "line 1: limit exceeded: format width 999999999 is too large",
        ),
        ("{{ '%99999s'|format('x') }}", "line 1: limit exceeded: format width 99999 is too large"),
        ("{{ email.text|indent(10**7) }}", "line 1: limit exceeded: indent would build too large a text"),
        (
            "{{ range(100000)|join(email.text) }}",
            "line 1: limit exceeded: the join would build too large a text",
        ),
        (
            "{{ email.text.replace('', email.text * 500) }}",
            "line 1: limit exceeded: the replacement would build too large a text",
        ),
        (
            "{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ d('x', 40) }}",
            "line 1: limit exceeded: a value built by the template is too large",
        ),
        (
            "{% macro m() %}{% for i in range(90000) %}{{ email.text }}{% endfor %}{% endmacro %}"
            "{{ m()|length }}",
            "line 1: limit exceeded: the template prints more than 5000000 characters",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "line 1: limit exceeded: too much recursion"),
    ],
)
def test_resource_limits(source, message):
    with pytest.raises(TemplateProblem) as excinfo:
        render(source)
    assert str(excinfo.value).startswith(message)


def test_time_limit(monkeypatch):
    monkeypatch.setattr(sandbox, "RENDER_TIME_LIMIT", -1.0)  # every check finds the time is up
    with pytest.raises(TemplateProblem) as excinfo:
        render("{% for i in range(3) %}{{ i }}{% endfor %}")
    assert str(excinfo.value) == "line 1: limit exceeded: the template took longer than -1 s to render"


def test_huge_output_is_refused():
    with pytest.raises(TemplateProblem) as excinfo:
        render("{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}")
    assert str(excinfo.value) == f"the output is larger than {MAX_OUTPUT_CHARS} characters"


def test_output_just_under_the_limit_is_fine():
    assert len(render("{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}")) == MAX_OUTPUT_CHARS


def test_literal_text_in_loops_counts_too():
    source = "{% for i in range(20000) %}" + "y" * 60 + "{% endfor %}"
    with pytest.raises(TemplateProblem) as excinfo:
        render(source)
    assert str(excinfo.value) == f"the output is larger than {MAX_OUTPUT_CHARS} characters"


def test_reasonable_formatting_is_allowed():
    assert render(
        "{{ '%05d' % case.number }} {{ '{:>6}'.format(case.number) }} {{ '100%% 12345' % () }}"
    ) == ("01042   1042 100% 12345")


def test_loops_just_under_the_iteration_limit_are_fine():
    assert render("{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}ok") == "ok"


# --------------------------------------------------------------------------- helpers


def test_header_safe_strips_line_breaks():
    assert header_value_safe("Hi\r\nBcc: evil@x") == "Hi Bcc: evil@x"


def test_header_safe_strips_other_control_characters_and_folds_whitespace():
    assert header_value_safe("  a\x00b\tc\u2028d\x85e\x1bf   g \n") == "a b c d e f g"


def test_header_safe_caps_at_998_characters():
    assert header_value_safe("x" * 2000) == "x" * 998
    assert header_value_safe("") == ""


def test_sample_context_shape():
    ctx = sample_context()
    assert tuple(ctx) == ALLOWED_VARIABLES
    assert set(ctx["email"]) == {"subject", "sender_name", "sender_address", "date", "text"}
    assert set(ctx["mailbox"]) == {"label", "address"}
    assert set(ctx["case"]) == {"number", "reference", "subject", "status"}
    assert set(ctx["lead"]) == {"name", "status"}
    assert isinstance(ctx["email"]["date"], datetime)
    assert ctx["email"]["date"].tzinfo is not None
    assert ctx["case"]["reference"] == f"#{ctx['case']['number']}"


def test_sample_context_is_a_fresh_copy():
    first = sample_context()
    first["email"]["subject"] = "changed"
    assert sample_context()["email"]["subject"] == "Order 2024-0815: wrong size delivered"


# --------------------------------------------------------------------------- bounded input, real deadline


def test_the_template_sees_the_first_64_kib_of_a_huge_text():
    huge = "word " * (16 * 1024 * 1024 // 5)  # a 16 MB body
    assert render("{{ email.text|length }}", context(text=huge)) == str(rendering.MAX_CONTEXT_TEXT_CHARS)
    wrapped = render("{{ email.text|wordwrap(72) }}", context(text=huge))
    assert "".join(wrapped.split()) == "".join(huge[: rendering.MAX_CONTEXT_TEXT_CHARS].split())


@pytest.mark.parametrize("field", ["subject", "sender_name", "sender_address"])
def test_other_texts_are_bounded_to_a_header_length(field):
    assert render(f"{{{{ email.{field}|length }}}}", context(**{field: "x" * 100_000})) == "998"


def test_the_time_limit_interrupts_a_single_long_filter_call(monkeypatch):
    monkeypatch.setattr(sandbox, "RENDER_TIME_LIMIT", 0.05)
    ctx = context(text="y" * rendering.MAX_CONTEXT_TEXT_CHARS)  # one long word
    with pytest.raises(TemplateProblem, match="took longer than") as raised:
        render("{{ (email.text * 70)|wordwrap(1) }}", ctx)
    # Raised inside textwrap, i.e. the filter call was stopped, not waited for.
    frames = []
    tb = raised.value.__cause__.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert any(name.endswith("textwrap.py") for name in frames)
