"""A bounded Jinja2 sandbox: templates written by admins, rendered with budgets and a deadline.

Generic: it knows nothing of emails or of which variables a template may use (the caller names
them); `autoresponse.rendering` is mailhub's template contract on top of it. Pure Python: no ORM,
no settings, no network.

Why each rule exists:

* `ImmutableSandboxedEnvironment` refuses attributes starting with ``_``, Python internals, unsafe
  callables and changing the context's dicts and lists. Any refusal or error comes out as
  `TemplateProblem`, with the template line when known.
* ``html=True`` autoescapes every printed value and the ``safe`` filter and ``{% autoescape %}``
  blocks are gone, so text from outside can never become markup. Undefined names and attributes
  are errors (`StrictUndefined`), so a typo fails instead of printing nothing.
* ``include``/``import``/``extends`` (there is nothing to load), recursive loops and every global
  but the sandbox's capped ``range`` are removed: fewer objects with Python internals reachable.
* Resource limits per rendering: output at most `MAX_OUTPUT_CHARS`, all loops together at most
  `MAX_LOOP_ITERATIONS` iterations, `RENDER_TIME_LIMIT` seconds. Every value built along the way
  (``*``, ``**``, ``+``, ``~``, ``%``, filters, method calls) is size-checked, and format widths
  above `MAX_FORMAT_WIDTH` are refused before they allocate. The deadline really stops work: a
  ``sys.settrace`` function checks it every `_TRACE_CHECK_EVERY` line events and raises inside
  whatever filter runs; work done in C in one call (``str.replace``) is bounded by the size checks.
"""

from __future__ import annotations

import contextvars
import functools
import re
import string
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

__all__ = [
    "MAX_FORMAT_WIDTH",
    "MAX_INT_BITS",
    "MAX_LOOP_ITERATIONS",
    "MAX_OUTPUT_CHARS",
    "MAX_TEMPLATE_CHARS",
    "MAX_WORK_CHARS",
    "RENDER_TIME_LIMIT",
    "TemplateProblem",
    "sandbox_compile",
    "sandbox_render",
]

#: Longest template source accepted.
MAX_TEMPLATE_CHARS = 100_000
#: Largest rendered output (characters).
MAX_OUTPUT_CHARS = 1_000_000
#: Largest value built while rendering, and the budget of everything printed (including what is
#: printed into macros and ``{% set %}`` blocks before it reaches the output).
MAX_WORK_CHARS = 5_000_000
#: Iterations of all ``{% for %}`` loops of one rendering together.
MAX_LOOP_ITERATIONS = 100_000
#: Seconds one rendering may take.
RENDER_TIME_LIMIT = 2.0
#: The render deadline is checked every this many traced events (a power of two, minus one mask).
_TRACE_CHECK_EVERY = 1024
#: Largest width or precision in a format string (``%5d``, ``{:>10}``, strftime ``%-10d``).
MAX_FORMAT_WIDTH = 9_999
#: Largest integer built by ``*`` or ``**`` (bits).
MAX_INT_BITS = 4096
_MAX_MESSAGE_CHARS = 300
_TEMPLATE_FILENAME = "<template>"


class TemplateProblem(ValueError):
    """A template that cannot be saved or rendered; ``str()`` is meant for the admin."""

    def __init__(self, message: str, line: int | None = None, *, none_access: bool = False):
        self.message = message
        self.line = line
        #: True when the problem is only an attribute or item of a None value (``none.x``): the
        #: caller decides whether that None is an optional part it tolerates.
        self.none_access = none_access
        super().__init__(f"line {line}: {message}" if line else message)


# --------------------------------------------------------------------------- per-render budget


@dataclass
class _Budget:
    deadline: float
    iterations: int = 0
    work: int = 0


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("sandbox_render_budget")


class _LimitExceeded(SecurityError):
    """A resource limit of the sandbox was hit."""


def _current_budget() -> _Budget | None:
    # Outside template_render (e.g. Jinja folding constants at compile time) there is no budget;
    # the size checks still apply there.
    return _BUDGET.get(None)


def _tick() -> None:
    budget = _current_budget()
    if budget is not None and time.monotonic() > budget.deadline:
        raise _LimitExceeded(f"the template took longer than {RENDER_TIME_LIMIT:g} s to render")


def _size(value: Any) -> int:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return 0


def _check_size(value: Any) -> Any:
    if _size(value) > MAX_WORK_CHARS:
        raise _LimitExceeded(f"a value built by the template is too large (over {MAX_WORK_CHARS} items)")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise _LimitExceeded("a number built by the template is too large")
    return value


def _guard_value(value: Any) -> Any:
    """Wrapped around every ``~`` concatenation by the AST rewrite: checks the result's size."""
    _tick()
    return _check_size(value)


def _guard_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    """Wrapped around the iterable of every ``{% for %}`` by the AST rewrite."""
    budget = _current_budget()
    for item in iterable:
        if budget is not None:
            budget.iterations += 1
            if budget.iterations > MAX_LOOP_ITERATIONS:
                raise _LimitExceeded(f"the template's loops ran more than {MAX_LOOP_ITERATIONS} times")
        _tick()
        yield item


@pass_context
def _finalize(_context: Any, value: Any) -> Any:
    """Runs on every printed value, also inside macros and blocks: accounts the printed size."""
    _tick()
    budget = _current_budget()
    if budget is not None:
        budget.work += len(value) if isinstance(value, str) else len(str(value))
        if budget.work > MAX_WORK_CHARS:
            raise _LimitExceeded(f"the template prints more than {MAX_WORK_CHARS} characters")
    return value


# --------------------------------------------------------------------------- format strings

# printf-style conversion: %[(key)][flags][width|*][.precision|*] — also strftime's glibc widths.
# "%%" is consumed first: it is a literal percent sign, not the start of a conversion.
_PERCENT_SPEC = re.compile(r"%%|%(?:\([^)]*\))?[-#0 +_^]*(\*|\d+)?(?:\.(\*|\d*))?")
_DIGITS = re.compile(r"\d+")


def _check_width(number: str) -> None:
    if number == "*":
        raise SecurityError("'*' widths in format strings are not allowed")
    # The length test first: int() refuses strings of more than 4300 digits.
    if number and (len(number) > 6 or int(number) > MAX_FORMAT_WIDTH):
        raise _LimitExceeded(f"format width {number} is too large (at most {MAX_FORMAT_WIDTH})")


def _check_percent_format(fmt: str) -> None:
    if len(fmt) > MAX_WORK_CHARS:
        raise _LimitExceeded("the format string is too large")
    for match in _PERCENT_SPEC.finditer(fmt):
        for group in match.groups():
            if group:
                _check_width(group)


def _check_brace_format(fmt: str) -> None:
    for _literal, field_name, spec, _conversion in string.Formatter().parse(fmt):
        if field_name is None or not spec:
            continue
        if "{" in spec:
            raise SecurityError("nested replacement fields in format specifications are not allowed")
        # Every number in a spec is a width or precision (or a strftime width for dates).
        for number in _DIGITS.findall(spec):
            _check_width(number)


# --------------------------------------------------------------------------- calls and filters


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _check_replace(text: str, old: Any, new: Any, count: Any = None) -> None:
    if not (isinstance(old, str) and isinstance(new, str)):
        return
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    if len(text) + occurrences * max(0, len(new) - len(old)) > MAX_WORK_CHARS:
        raise _LimitExceeded("the replacement would build too large a text")


def _check_join(separator: Any, iterable: Any) -> None:
    sized = hasattr(iterable, "__len__") and not isinstance(iterable, str)
    if isinstance(separator, str) and sized and len(separator) * len(iterable) > MAX_WORK_CHARS:
        raise _LimitExceeded("the join would build too large a text")


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Pre-checks of the str methods whose result can be much larger than their inputs."""
    if name in ("center", "ljust", "rjust", "zfill"):
        width = _arg(args, kwargs, 0, "width")
        if isinstance(width, int) and width > MAX_WORK_CHARS:
            raise _LimitExceeded(f"width {width} is too large")
    elif name == "expandtabs":
        tabsize = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(tabsize, int) and len(text) + text.count("\t") * tabsize > MAX_WORK_CHARS:
            raise _LimitExceeded("expandtabs would build too large a text")
    elif name == "replace":
        _check_replace(
            text,
            _arg(args, kwargs, 0, "old"),
            _arg(args, kwargs, 1, "new"),
            _arg(args, kwargs, 2, "count"),
        )
    elif name == "join":
        _check_join(text, _arg(args, kwargs, 0, "iterable"))
    elif name in ("format", "format_map"):
        _check_brace_format(text)


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format / str.format_map
    receiver = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(receiver, str):
        _check_str_method(receiver, name, args, kwargs)
    elif isinstance(receiver, date) and name == "strftime":
        fmt = _arg(args, kwargs, 0, "format")
        if isinstance(fmt, str):
            _check_percent_format(fmt)


def _filter_guard(name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], None]:
    """Pre-checks of the built-in filters whose result can be much larger than their inputs.

    Filters receive (value, *args) after the optional context/environment argument; the guard
    gets that tail.
    """

    def guard(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        value = args[0] if args else None
        rest = args[1:]
        if name == "center":
            width = _arg(rest, kwargs, 0, "width", 80)
            if isinstance(width, int) and width > MAX_WORK_CHARS:
                raise _LimitExceeded(f"width {width} is too large")
        elif name == "indent":
            width = _arg(rest, kwargs, 0, "width", 4)
            unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            lines = str(value).count("\n") + 1
            if unit * lines > MAX_WORK_CHARS:
                raise _LimitExceeded("indent would build too large a text")
        elif name == "wordwrap":
            width = _arg(rest, kwargs, 0, "width", 79)
            wrap = _arg(rest, kwargs, 2, "wrapstring", "\n")
            usable = isinstance(width, int) and width > 0 and isinstance(wrap, str)
            if usable and (len(str(value)) // width + 1) * len(wrap) > MAX_WORK_CHARS:
                raise _LimitExceeded("wordwrap would build too large a text")
        elif name in ("slice", "batch"):
            count = _arg(rest, kwargs, 0, "slices" if name == "slice" else "linecount")
            if isinstance(count, int) and count > MAX_LOOP_ITERATIONS:
                raise _LimitExceeded(f"{name} count {count} is too large")
        elif name == "tojson":
            indent = _arg(rest, kwargs, 0, "indent")
            if isinstance(indent, int) and indent > MAX_FORMAT_WIDTH:
                raise _LimitExceeded(f"indent {indent} is too large")
        elif name == "format":
            if isinstance(value, str):
                _check_percent_format(value)
        elif name == "replace":
            if isinstance(value, str):
                _check_replace(
                    value,
                    _arg(rest, kwargs, 0, "old"),
                    _arg(rest, kwargs, 1, "new"),
                    _arg(rest, kwargs, 2, "count"),
                )
        elif name == "join":
            _check_join(_arg(rest, kwargs, 0, "d", ""), value)

    return guard


def _wrap_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    guard = _filter_guard(name)
    passes_first = hasattr(func, "jinja_pass_arg")  # context / eval context / environment

    @functools.wraps(func)  # also copies jinja_pass_arg, which tells Jinja what to pass
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        guard(args[1:] if passes_first else args, kwargs)
        return _check_size(func(*args, **kwargs))

    return wrapper


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before Python allocates it."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if _size(sequence) and _is_int(times) and _size(sequence) * times > MAX_WORK_CHARS:
                raise _LimitExceeded("the repetition would build too large a value")
        if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _LimitExceeded("the product is too large a number")
    elif operator == "**":
        # bits(b ** e) is about bits(b) * e; a negative exponent gives a float (or an error).
        if (
            _is_int(left)
            and _is_int(right)
            and right > 0
            and max(1, left.bit_length()) * right > MAX_INT_BITS
        ):
            raise _LimitExceeded("the power is too large a number")
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left)


# --------------------------------------------------------------------------- environment


class _Sandbox(ImmutableSandboxedEnvironment):
    # Intercepted so that 'x' * 10**9, 9 ** 10**9 and '%099999999d' % 1 are refused before they
    # allocate; '+' so that repeated doubling is caught by the size check.
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, html: bool):
        super().__init__(
            autoescape=html,
            undefined=StrictUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        # Only the sandbox's capped range() stays (see the module docstring).
        self.globals = {"range": self.globals["range"]}
        # 'safe' would let text from the incoming email become markup in HTML mails.
        self.filters = {
            name: _wrap_filter(name, func) for name, func in self.filters.items() if name != "safe"
        }

    # An attribute or item of an undefined value is that same undefined value, so the error finally
    # shown is the first one: "'__class__' of 'datetime' is unsafe", not a confusing later one
    # about the Undefined object itself. Nothing is reachable through it either way.
    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined):
            return obj
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Undefined):
            return obj
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Same odd signature as the base class: the caller's keyword arguments must not clash.
        _tick()
        _check_call(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


_ENVIRONMENTS = {True: _Sandbox(html=True), False: _Sandbox(html=False)}


# --------------------------------------------------------------------------- compiling


class _Harden(NodeTransformer):
    """Rewrites the parsed template so that every loop, concatenation and literal is accounted."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        if node.recursive:
            raise TemplateProblem("recursive loops are not allowed", node.lineno)
        self.generic_visit(node)  # transforms the children in place
        node.iter = _guarded_call("_guard_loop", node.iter, node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Expr:
        self.generic_visit(node)
        return _guarded_call("_guard_value", node, node.lineno)

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        # Literal text is folded into the code as a constant and would bypass finalize; as a
        # (markup-safe) expression it goes through finalize and counts, e.g. inside a loop.
        node.nodes = [
            nodes.MarkSafeIfAutoescape(nodes.Const(child.data), lineno=child.lineno)
            if isinstance(child, nodes.TemplateData)
            else child
            for child in node.nodes
        ]
        return node


def _guarded_call(function: str, argument: nodes.Node, lineno: int) -> nodes.Call:
    target = nodes.ImportedName(f"{__name__}.{function}", lineno=lineno)
    return nodes.Call(target, [argument], [], None, None, lineno=lineno)


_FORBIDDEN_NODES: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Extends, "'extends' is not available"),
    (nodes.Include, "'include' is not available"),
    (nodes.Import, "'import' is not available"),
    (nodes.FromImport, "'import' is not available"),
    (nodes.ScopedEvalContextModifier, "'autoescape' blocks are not available"),
    (nodes.EvalContextModifier, "'autoescape' blocks are not available"),
)


def _first_line(ast: nodes.Template, name: str) -> int | None:
    for node in ast.find_all(nodes.Name):
        if node.name == name and node.ctx == "load":
            return node.lineno
    return None


@functools.lru_cache(maxsize=256)
def _compile(source: str, html: bool, variables: tuple[str, ...]) -> Template:
    """Parse, check and compile; raises TemplateProblem. Cached: templates are reused a lot."""
    if not isinstance(source, str):
        raise TemplateProblem("the template must be text")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(f"the template is too long (at most {MAX_TEMPLATE_CHARS} characters)")
    try:
        return _compile_checked(source, _ENVIRONMENTS[bool(html)], variables)
    except TemplateProblem:
        raise
    # Syntax errors, TemplateAssertionError (an unknown filter), and whatever an absurd source
    # provokes in the parser or in Python's compiler (RecursionError, SyntaxError, MemoryError).
    except Exception as exc:
        raise _problem(exc) from exc


def _compile_checked(source: str, environment: _Sandbox, variables: tuple[str, ...]) -> Template:
    ast = environment.parse(source)
    for node_type, message in _FORBIDDEN_NODES:
        for node in ast.find_all(node_type):
            raise TemplateProblem(message, node.lineno)
    allowed = set(variables) | set(environment.globals)
    unknown = sorted(meta.find_undeclared_variables(ast) - allowed)
    if unknown:
        name = unknown[0]
        raise TemplateProblem(
            f"unknown variable '{name}' (available: {', '.join(variables)})",
            _first_line(ast, name),
        )
    return environment.from_string(_Harden().visit(ast))


# --------------------------------------------------------------------------- rendering


def _clip(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= _MAX_MESSAGE_CHARS else message[: _MAX_MESSAGE_CHARS - 1] + "…"


def _template_line(exc: BaseException) -> int | None:
    # Jinja rewrites tracebacks so that template frames carry the template's file name and line.
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_NONE_ACCESS = re.compile(r"^'None' has no (?:attribute|element) ")


def _problem(exc: Exception) -> TemplateProblem:
    line = _template_line(exc)
    if isinstance(exc, TemplateSyntaxError):
        return TemplateProblem(_clip(exc.message or "syntax error"), exc.lineno or line)
    message = _clip(str(exc)) or type(exc).__name__
    if isinstance(exc, _LimitExceeded):
        return TemplateProblem(f"limit exceeded: {message}", line)
    if isinstance(exc, SecurityError):
        return TemplateProblem(f"not allowed: {message}", line)
    if isinstance(exc, UndefinedError):
        return TemplateProblem(message, line, none_access=bool(_NONE_ACCESS.match(message)))
    if isinstance(exc, RecursionError):
        return TemplateProblem("limit exceeded: too much recursion", line)
    if isinstance(exc, OverflowError | MemoryError):
        return TemplateProblem(f"limit exceeded: {message}", line)
    return TemplateProblem(f"{type(exc).__name__}: {message}", line)


def _deadline_tracer(deadline: float) -> Callable[..., Any]:
    """A sys.settrace function raising `_LimitExceeded` in the running code after `deadline`.

    Line events reach a loop that runs inside one Python call (textwrap's), not only calls.
    """
    events = 0
    mask = _TRACE_CHECK_EVERY - 1

    def trace(_frame: Any, _event: str, _arg: Any) -> Any:
        nonlocal events
        events += 1
        if not events & mask and time.monotonic() > deadline:
            raise _LimitExceeded(f"the template took longer than {RENDER_TIME_LIMIT:g} s to render")
        return trace

    return trace


def sandbox_compile(source: str, *, html: bool, variables: tuple[str, ...]) -> Template:
    """Compile `source`, which may use only `variables` (and ``range``); raises TemplateProblem.

    Unknown variables are refused here with their name and line, so a typo in a branch that the
    caller's sample data never takes is still caught.
    """
    return _compile(source, bool(html), tuple(variables))


def sandbox_render(template: Template, variables: Mapping[str, Any]) -> str:
    """Render a `sandbox_compile`d template within the budgets; raises only TemplateProblem.

    The caller bounds the values it passes: what a template does with them is at most
    proportional to their size.
    """
    deadline = time.monotonic() + RENDER_TIME_LIMIT
    token = _BUDGET.set(_Budget(deadline=deadline))
    chunks = template.generate(dict(variables))
    # Only this thread is traced; a tracer already installed (a debugger, coverage) is put back.
    previous_trace = sys.gettrace()
    sys.settrace(_deadline_tracer(deadline))
    try:
        parts: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateProblem(f"the output is larger than {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    except TemplateProblem:
        raise
    # Templates are admin-written code: anything they raise (Jinja errors, SecurityError, a
    # TypeError from a filter, RecursionError, MemoryError...) becomes a TemplateProblem.
    # BaseException (KeyboardInterrupt, SystemExit, a Celery time limit) is left alone.
    except Exception as exc:
        raise _problem(exc) from exc
    finally:
        sys.settrace(previous_trace)
        if isinstance(chunks, Generator):  # it is one: closing runs the template's finally blocks
            chunks.close()
        _BUDGET.reset(token)
