"""Lookups that answer "no row" for an integer the column cannot hold, instead of a database error.

Django (since 5.0) does this for `exact`, `gt`, `gte`, `lt` and `lte` on integer fields: an
out-of-range value matches nothing (or everything, for a bound), and no query is sent. It does
not for foreign keys (`email=2**63`, the form of every admin list filter on a relation, and of
`Attachment.objects.filter(email_id=...)`), nor for `in` on either. There SQLite's driver raises
OverflowError while binding the parameter and PostgreSQL may refuse the value: a 500 for a URL
or an admin filter someone edited. Registered once from `MailboxesConfig.ready()`, these
replace Django's own lookups of those names with the same check, so every queryset (the staff
pages, the admin, services) gets it; in-range values compile exactly as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db.models import ForeignKey, ForeignObject, IntegerField
from django.db.models.expressions import Col
from django.db.models.fields.related_lookups import (
    RelatedExact,
    RelatedGreaterThan,
    RelatedGreaterThanOrEqual,
    RelatedIn,
    RelatedLessThan,
    RelatedLessThanOrEqual,
)
from django.db.models.lookups import In

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.lookups import Lookup
    from django.db.models.sql.compiler import SQLCompiler, _AsSqlType

    # The mixins below are only ever combined with a Lookup; at run time they stay plain
    # classes so the lookups' MRO is exactly Django's own behind them.
    _LookupMixin = Lookup[Any]
else:
    _LookupMixin = object


def _integer_range(
    lookup: Lookup[Any], connection: BaseDatabaseWrapper
) -> tuple[int | None, int | None] | None:
    """(min, max) the column of the lookup's left side holds, or None if it is no integer."""
    # A column's own field: the output field of a reverse relation (`emails__in`) is the
    # relation, its column the other model's key.
    field = lookup.lhs.target if isinstance(lookup.lhs, Col) else getattr(lookup.lhs, "output_field", None)
    while isinstance(field, ForeignKey):  # a key compares as the field it points to
        field = field.target_field
    if not isinstance(field, IntegerField):
        return None
    try:
        bounds: tuple[int | None, int | None] = connection.ops.integer_field_range(field.get_internal_type())
    except KeyError:  # a custom integer type the backend does not list: left to the database
        return None
    return bounds


class _BoundedComparison(_LookupMixin):
    """`field <op> value` with `value` beyond the column's range: no row or every row."""

    underflow_exception: type[Exception] = EmptyResultSet
    overflow_exception: type[Exception] = EmptyResultSet

    def process_rhs(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> _AsSqlType:
        if isinstance(self.rhs, int) and not isinstance(self.rhs, bool):
            bounds = _integer_range(self, connection)
            if bounds is not None:
                low, high = bounds
                if low is not None and self.rhs < low:
                    raise self.underflow_exception
                if high is not None and self.rhs > high:
                    raise self.overflow_exception
        return super().process_rhs(compiler, connection)


class _BoundedIn(_LookupMixin):
    """`field IN (values)`: a value the column cannot hold equals no row, so it is left out (with
    none left, Django's `In` answers "no row" itself)."""

    def process_rhs(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper) -> _AsSqlType:
        if self.rhs_is_direct_value():
            bounds = _integer_range(self, connection)
            if bounds is not None:
                low, high = bounds
                self.rhs = [
                    value
                    for value in self.rhs
                    if not isinstance(value, int)
                    or ((low is None or value >= low) and (high is None or value <= high))
                ]
        return super().process_rhs(compiler, connection)


class BoundedRelatedExact(_BoundedComparison, RelatedExact):
    pass


class BoundedRelatedGreaterThan(_BoundedComparison, RelatedGreaterThan):
    underflow_exception = FullResultSet


class BoundedRelatedGreaterThanOrEqual(_BoundedComparison, RelatedGreaterThanOrEqual):
    underflow_exception = FullResultSet


class BoundedRelatedLessThan(_BoundedComparison, RelatedLessThan):
    overflow_exception = FullResultSet


class BoundedRelatedLessThanOrEqual(_BoundedComparison, RelatedLessThanOrEqual):
    overflow_exception = FullResultSet


class BoundedRelatedIn(_BoundedIn, RelatedIn):
    pass


class BoundedIntegerIn(_BoundedIn, In):
    pass


def register_bounded_integer_lookups() -> None:
    for lookup in (
        BoundedRelatedExact,
        BoundedRelatedGreaterThan,
        BoundedRelatedGreaterThanOrEqual,
        BoundedRelatedLessThan,
        BoundedRelatedLessThanOrEqual,
        BoundedRelatedIn,
    ):
        ForeignObject.register_lookup(lookup)
    IntegerField.register_lookup(BoundedIntegerIn)
