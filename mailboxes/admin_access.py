"""The admin keeps the staff pages' access rule: `Mailbox.objects.accessible_to(user)`.

A leaf module (it imports only the mailboxes models) so that every app's admin can use it
without importing another app's admin. Superusers see everything, as `accessible_to` says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib import admin
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from .access import Reach, mailbox_reach
from .models import Mailbox

if TYPE_CHECKING:
    from django.contrib.admin.options import BaseModelAdmin
    from django.contrib.auth.models import AnonymousUser, User
    from django.db.models import ForeignKey
    from django.forms import ModelChoiceField

    # The checker sees the mixin as the admin base it is mixed into (its super() calls).
    _AdminBase = BaseModelAdmin[Any]
else:
    _AdminBase = object

_M = TypeVar("_M", bound=Model)

# The relations followed from a model to the mailbox its rows belong to, in this order: an email
# by `mailbox`, an attachment or auto-reply by `email`, a rule condition by `rule`, a case event
# by `case`.
_PATH_FIELDS = ("mailbox", "email", "rule", "case")


def mailbox_path(model: type[Model]) -> str | None:
    """The lookup from `model` to its Mailbox ("" for Mailbox itself), or None if it has none."""
    if model is Mailbox:
        return ""
    for name in _PATH_FIELDS:
        try:
            field = model._meta.get_field(name)
        except FieldDoesNotExist:
            continue
        # A forward one-to-one (an outbound message's `email`) leads to a mailbox as well as a
        # foreign key does; reverse relations never do.
        if not (field.many_to_one or field.one_to_one) or not field.concrete or field.related_model is None:
            continue
        inner = mailbox_path(field.related_model)
        if inner is not None:
            return f"{name}__{inner}" if inner else name
    return None


def scoped_to_user(queryset: QuerySet[_M], user: User | AnonymousUser) -> QuerySet[_M]:
    """Rows of the mailboxes `user` may see; a model without a mailbox is left as it is."""
    path = mailbox_path(queryset.model)
    if path is None:
        return queryset
    if mailbox_reach(user) is Reach.EVERYTHING:
        return queryset  # accessible_to is all of them: no subquery needed
    accessible = Mailbox.objects.accessible_to(user)
    if path == "":
        return queryset.filter(pk__in=accessible.values("pk"))
    return queryset.filter(**{f"{path}__in": accessible.values("pk")})


class MailboxScopedMixin(_AdminBase):
    """For ModelAdmins and inlines: rows, and the choices of foreign keys, of the user's
    mailboxes only. A row outside them is not found (the admin answers with a redirect and
    "doesn't exist", never showing it), and a form can't attach a row to another mailbox."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return scoped_to_user(super().get_queryset(request), request.user)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        if "queryset" not in kwargs and mailbox_path(db_field.related_model) is not None:
            kwargs["queryset"] = scoped_to_user(
                db_field.remote_field.model._default_manager.all(), request.user
            )
            if "widget" not in kwargs and db_field.name in self.raw_id_fields:
                kwargs["widget"] = ScopedRawIdWidget(
                    db_field.remote_field, self.admin_site, kwargs["queryset"], using=kwargs.get("using")
                )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ScopedRawIdWidget(ForeignKeyRawIdWidget):
    """Django's raw-id widget prints the label of whatever id it is given (`?previous_case=N`),
    looked up with the model's default manager: this one only names rows the user may see."""

    def __init__(self, rel: Any, admin_site: admin.AdminSite, queryset: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(rel, admin_site, **kwargs)
        self.scoped_queryset = queryset

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        key = self.rel.get_related_field().name
        try:
            visible = self.scoped_queryset.filter(**{key: value}).exists()
        except (ValueError, TypeError, OverflowError):
            visible = False
        if not visible:
            return "", ""
        return super().label_and_url_for_value(value)


# The mailbox filter of a changelist lists only the mailboxes of the rows the user sees, not
# every mailbox's label.
MAILBOX_FILTER = admin.RelatedOnlyFieldListFilter
