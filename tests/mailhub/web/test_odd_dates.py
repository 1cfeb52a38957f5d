"""Odd instants (a Date header, an INTERNALDATE) never break a page.

Storing keeps instants between 1900 and 9000; the staff pages also survive the very edges of
Python's datetime (year 1, year 9999), shown in UTC when the display time zone cannot hold them.
The admin is checked for the range storing allows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.test import Client

from mailhub.templatetags.mailhub_dates import when
from tests.factories import CaseFactory, EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db

STORABLE = [
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(9000, 12, 31, 23, 59, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=-14))),
    datetime(8999, 12, 31, 12, tzinfo=timezone(timedelta(hours=14))),
]
EDGES = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)]
# UTC+14 and UTC-12: the two ends of the world's offsets.
ZONES = ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"]


@pytest.fixture
def pages(settings, request):
    def make(field: str, value: datetime, zone: str):
        settings.TIME_ZONE = zone
        mailbox = MailboxFactory()
        case = CaseFactory(mailbox=mailbox)
        email = EmailFactory(mailbox=mailbox, case=case, **{field: value})
        EmailFactory.create_batch(30, mailbox=mailbox)  # a second grid page, with a cursor
        client = Client(raise_request_exception=False)
        client.force_login(UserFactory(is_superuser=True, is_staff=True))
        return client, email, case

    return make


def _staff_statuses(client, email, case) -> list[int]:
    statuses = []
    for url in (f"/emails/{email.pk}/", f"/cases/{case.pk}/"):
        statuses.append(client.get(url).status_code)
    for order in ("asc", "desc"):
        grid = client.get("/emails/", {"order": order, "per_page": "25"})
        statuses += [grid.status_code, client.get(grid.context["urls"].next).status_code]
    return statuses


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("field", ["date", "received_at"])
@pytest.mark.parametrize("value", STORABLE + EDGES, ids=str)
def test_staff_pages_answer_for_any_instant(pages, field, value, zone):
    client, email, case = pages(field, value, zone)
    assert _staff_statuses(client, email, case) == [200] * 6


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("field", ["date", "received_at"])
@pytest.mark.parametrize("value", STORABLE, ids=str)
def test_admin_email_pages_answer_for_instants_storing_allows(pages, field, value, zone):
    client, email, _case = pages(field, value, zone)
    assert client.get("/admin/mailboxes/email/").status_code == 200
    assert client.get(f"/admin/mailboxes/email/{email.pk}/change/").status_code == 200


def test_an_instant_the_display_zone_cannot_hold_is_shown_in_utc(pages):
    client, email, _case = pages("date", datetime(9999, 12, 31, 23, 59, tzinfo=UTC), "Pacific/Kiritimati")
    assert "Fri, 31 Dec 9999 23:59 UTC" in client.get(f"/emails/{email.pk}/").content.decode()


def test_an_instant_is_shown_in_the_display_zone(pages):
    client, email, _case = pages("date", datetime(2020, 1, 1, 12, tzinfo=UTC), "Pacific/Kiritimati")
    assert "Thu, 2 Jan 2020 02:00</dd>" in client.get(f"/emails/{email.pk}/").content.decode()


def test_a_naive_instant_is_shown_as_it_is():
    naive = datetime(1900, 1, 1, 8, 30)  # noqa: DTZ001 - naive on purpose
    assert when(naive, "D, j M Y H:i") == "Mon, 1 Jan 1900 08:30"
    assert when(None, "D") == ""
