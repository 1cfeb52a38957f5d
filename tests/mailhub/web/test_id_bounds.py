"""An id the database cannot hold, anywhere in a URL, answers like an id that does not exist.

SQLite's driver refuses integers beyond 64 bits (OverflowError while binding) and PostgreSQL's
bigint stops at 2**63-1: without the `<id:...>` converter and the bounded lookups, such an id
reached the database and answered 500. Every route that takes an id is found by walking the
URL conf, so a route added later is checked too.
"""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from mailboxes.models import Attachment, Email, Mailbox
from mailhub.web.converters import DatabaseIdConverter, database_id_from_text
from tests.factories import (
    AttachmentFactory,
    CaseFactory,
    EmailFactory,
    LeadFactory,
    MailboxFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

# Zero and negatives name no row; 2**63 and beyond overflow both databases; "1e5" is no integer;
# full-width digits are digits to int() but not to a URL.
FULL_WIDTH_01 = "\uff10\uff11"
HOSTILE_IDS = ["0", "-1", str(2**63), str(2**64), str(10**30), "1e5", FULL_WIDTH_01]


def _routes(patterns, prefix: str = "", converters=None):
    """(route, converters, name) of every URL pattern outside the admin."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        merged = {**(converters or {}), **pattern.pattern.converters}
        if isinstance(pattern, URLResolver):
            if pattern.app_name == "admin":
                continue
            yield from _routes(pattern.url_patterns, route, merged)
        elif isinstance(pattern, URLPattern):
            yield route, merged, pattern.name


ID_ROUTES = sorted(
    (route, list(converters)) for route, converters, _ in _routes(get_resolver().url_patterns) if converters
)


def test_every_route_with_an_id_uses_the_id_converter():
    converters = [c for _route, c, _name in _routes(get_resolver().url_patterns) for c in c.values()]
    assert converters
    assert all(isinstance(converter, DatabaseIdConverter) for converter in converters)
    assert [route for route, _names in ID_ROUTES] == [
        "cases/<id:pk>/",
        "cases/<id:pk>/notes/",
        "cases/<id:pk>/update/",
        "emails/<id:pk>/",
        "emails/<id:pk>/attachments/<id:attachment_pk>/",
        "emails/<id:pk>/body.html",
        "emails/<id:pk>/convert-to-case/",
        "emails/<id:pk>/convert-to-lead/",
        "emails/<id:pk>/forward/",
        "emails/<id:pk>/inline/<id:attachment_pk>/",
        "emails/<id:pk>/notes/",
        "emails/<id:pk>/original.eml",
        "emails/<id:pk>/reply-all/",
        "emails/<id:pk>/reply/",
        "emails/<id:pk>/send-again/",
        "leads/<id:pk>/",
    ]


@pytest.fixture
def superuser_client():
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


@pytest.fixture
def real_ids():
    """Ids of rows that exist, for the other ids of a route (the attachment's email, say)."""
    mailbox = MailboxFactory()
    email = EmailFactory(mailbox=mailbox)
    return {
        "emails/": {"pk": email.pk, "attachment_pk": AttachmentFactory(email=email).pk},
        "leads/": {"pk": LeadFactory(mailbox=mailbox).pk},
        "cases/": {"pk": CaseFactory(mailbox=mailbox).pk},
    }


def _url(route: str, ids: dict) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(ids[match.group(1)]), route)


@pytest.mark.parametrize("value", HOSTILE_IDS)
@pytest.mark.parametrize(("route", "names"), ID_ROUTES, ids=[route for route, _ in ID_ROUTES])
def test_an_id_the_database_cannot_hold_is_a_404(superuser_client, real_ids, route, names, value):
    existing = real_ids[route.split("/")[0] + "/"]
    for hostile in names:  # one id at a time, the others naming rows that exist
        url = _url(route, {**existing, hostile: value})
        assert superuser_client.get(url).status_code == 404, url
        assert superuser_client.post(url).status_code == 404, url


@pytest.mark.parametrize("value", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("method", "url", "parameter", "status"),
    [
        ("get", "/cases/", "mailbox", 200),
        ("get", "/leads/", "mailbox", 200),
        ("get", "/cases/", "person", 200),
        ("get", "/leads/", "person", 200),
        ("post", "/emails/view/", "view", 404),
    ],
)
def test_an_id_the_database_cannot_hold_in_a_parameter(
    superuser_client, real_ids, method, url, parameter, status, value
):
    response = getattr(superuser_client, method)(url, {parameter: value})
    assert response.status_code == status


@pytest.mark.parametrize("text", ["1", "42", str(2**63 - 1), "0001"])
def test_database_id_from_text_reads_ids(text):
    assert database_id_from_text(text) == int(text)


@pytest.mark.parametrize("text", [*HOSTILE_IDS, "", " 1", "1 ", "+1", "²", "1" * 100])
def test_database_id_from_text_refuses_what_names_no_row(text):
    assert database_id_from_text(text) is None


# -- the ORM: a value beyond the column's range matches no row (or every row, for a bound) --------

HUGE = [2**63, 2**64, 10**30]


@pytest.mark.parametrize("huge", HUGE)
@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        ("email", 0),
        ("email_id", 0),
        ("email__gt", 0),
        ("email__gte", 0),
        ("email__lt", 1),
        ("email__lte", 1),
        ("email__in", 0),
        ("pk__in", 0),
        ("email__mailbox", 0),
    ],
)
def test_lookups_beyond_the_range_of_a_key(real_ids, lookup, expected, huge):
    value = [huge] if lookup.endswith("__in") else huge
    assert Attachment.objects.filter(**{lookup: value}).count() == expected
    assert Attachment.objects.exclude(**{lookup: value}).count() == 1 - expected


@pytest.mark.parametrize(
    ("lookup", "expected"), [("email__gt", 1), ("email__gte", 1), ("email__lt", 0), ("email__lte", 0)]
)
def test_lookups_below_the_range_of_a_key(real_ids, lookup, expected):
    assert Attachment.objects.filter(**{lookup: -(2**63) - 1}).count() == expected


def test_in_keeps_the_values_in_range(real_ids):
    email = Email.objects.get()
    assert list(Email.objects.filter(pk__in=[2**64, email.pk])) == [email]
    assert list(Email.objects.filter(mailbox__in=[email.mailbox_id, 10**30])) == [email]
    assert Mailbox.objects.filter(emails__in=[10**30]).count() == 0


# -- the admin ------------------------------------------------------------------------------------


ADMIN_MODELS = sorted(admin.site._registry, key=lambda model: model._meta.label)


@pytest.mark.parametrize("value", HOSTILE_IDS)
@pytest.mark.parametrize("model", ADMIN_MODELS, ids=[model._meta.label for model in ADMIN_MODELS])
def test_admin_pages_of_an_id_the_database_cannot_hold(superuser_client, real_ids, model, value):
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    # Full-width "01" is 1 to the admin (int() reads Unicode digits): the change page of row 1, if any.
    names_a_row = value == FULL_WIDTH_01 and model.objects.filter(pk=1).exists()
    # A read-only admin (staff's answers: never deleted, the record of what went out) refuses
    # the delete page before looking the object up, as Django does: 403 for any id.
    request = RequestFactory().get("/")
    request.user = UserFactory.build(is_superuser=True, is_staff=True)
    deletable = admin.site._registry[model].has_delete_permission(request)
    for page in ("change", "delete", "history"):
        response = superuser_client.get(f"{base}{value}/{page}/")
        if page == "delete" and not deletable:
            assert response.status_code == 403
        elif names_a_row:
            assert response.status_code == 200
        else:  # the admin's answer for an object that does not exist
            assert (response.status_code, response.get("Location")) == (302, "/admin/")


def _relation_filters(model) -> list[str]:
    model_admin = admin.site._registry[model]
    paths = []
    for entry in model_admin.list_filter:
        if isinstance(entry, str) and get_fields_from_path(model, entry)[-1].is_relation:
            paths.append(entry)
    return paths


ADMIN_FILTERS = [(model, path) for model in ADMIN_MODELS for path in _relation_filters(model)]


@pytest.mark.parametrize("value", HOSTILE_IDS)
@pytest.mark.parametrize(
    ("model", "path"), ADMIN_FILTERS, ids=[f"{model._meta.label}:{path}" for model, path in ADMIN_FILTERS]
)
def test_admin_list_filters_with_an_id_the_database_cannot_hold(
    superuser_client, real_ids, model, path, value
):
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    for parameter in (path, f"{path}__exact", f"{path}__id__exact", f"{path}__in"):
        response = superuser_client.get(base, {parameter: value})
        if value == "1e5":  # not an integer: ignored by the filter, or the "invalid filter" redirect
            assert (response.status_code, response.get("Location")) in {(200, None), (302, f"{base}?e=1")}
        else:
            assert response.status_code == 200, parameter
