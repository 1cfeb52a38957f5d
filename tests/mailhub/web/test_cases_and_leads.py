"""Lead and case pages: lists and filters, the audited change of a case, assignee choices."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from mailboxes.models import Mailbox
from mailhub.web.emails.access import users_with_access_to
from processing.models import CaseEvent
from processing.services.cases import case_update
from tests.factories import CaseFactory, GroupFactory, LeadFactory, MailboxFactory, UserFactory

from .conftest import World

pytestmark = pytest.mark.django_db


def _update(client, case, **data):
    payload = {"status": case.status, "priority": case.priority, "assignee": case.assignee_id or ""}
    payload.update(data)
    return client.post(reverse("cases:update", args=[case.pk]), payload)


def test_case_update_records_who_changed_what(client, world: World):
    dana, gus = world.users["direct"], world.users["group"]
    case = world.support.case
    client.force_login(dana)
    response = _update(client, case, status="resolved", priority="urgent", assignee=gus.pk)
    assert response.status_code == 302
    assert response["Location"] == f"/cases/{case.pk}/"
    case.refresh_from_db()
    assert (case.status, case.priority, case.assignee) == ("resolved", "urgent", gus)
    assert case.resolved_at is not None
    events = list(
        CaseEvent.objects.filter(case=case)
        .order_by("pk")
        .values_list("user", "username", "field", "old_value", "new_value")
    )
    assert events == [
        (dana.pk, "dana", "status", "open", "resolved"),
        (dana.pk, "dana", "priority", "normal", "urgent"),
        (dana.pk, "dana", "assignee", "", "gus"),
    ]
    times = set(CaseEvent.objects.filter(case=case).values_list("created_at", flat=True))
    assert times == {case.resolved_at}

    page = client.get(f"/cases/{case.pk}/").content.decode()
    history = re.sub(r"\s+", " ", page.split('data-testid="case-timeline"', 1)[1].split("</ol>", 1)[0])
    assert "<strong>dana</strong> changed status from <em>Open</em> to <em>Resolved</em>" in history
    assert "<strong>dana</strong> changed priority from <em>Normal</em> to <em>Urgent</em>" in history
    assert "<strong>dana</strong> changed assignee from <em>nobody</em> to <em>gus</em>" in history
    assert '<li class="success">Case #' in page


def test_unchanged_form_records_nothing(client, world: World):
    client.force_login(world.users["direct"])
    case = world.support.case
    response = _update(client, case)
    assert response.status_code == 302
    assert CaseEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("start", "new_status", "resolved_after"),
    [
        ("open", "resolved", "now"),
        ("in_progress", "resolved", "now"),
        ("resolved", "open", None),  # reopened
        ("resolved", "in_progress", None),  # reopened
        ("resolved", "closed", "kept"),
        ("open", "closed", None),  # closed without being resolved: no resolution date invented
        ("open", "in_progress", None),
    ],
)
def test_resolved_at(world: World, start, new_status, resolved_after):
    earlier = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    case = CaseFactory(
        mailbox=world.support.mailbox, status=start, resolved_at=earlier if start == "resolved" else None
    )
    case_update(
        case_id=case.pk, user=world.users["direct"], status=new_status, priority=case.priority, assignee=None
    )
    case.refresh_from_db()
    if resolved_after == "now":
        assert case.resolved_at is not None
        assert case.resolved_at > earlier
    elif resolved_after == "kept":
        assert case.resolved_at == earlier
    else:
        assert case.resolved_at is None


def test_old_values_come_from_the_database_not_the_form(world: World):
    """Two people save at once: the second event starts from what the first one saved."""
    dana, gus = world.users["direct"], world.users["group"]
    case = world.support.case
    case_update(case_id=case.pk, user=dana, status="in_progress", priority="normal", assignee=None)
    case_update(case_id=case.pk, user=gus, status="resolved", priority="normal", assignee=None)
    trail = list(CaseEvent.objects.order_by("pk").values_list("username", "old_value", "new_value"))
    assert trail == [("dana", "open", "in_progress"), ("gus", "in_progress", "resolved")]


def test_assignee_choices_are_active_users_with_access(client, world: World):
    inactive = UserFactory(username="ivan", is_active=False)
    world.support.mailbox.authorized_users.add(inactive)
    client.force_login(world.users["direct"])
    page = client.get(f"/cases/{world.support.case.pk}/").content.decode()
    select = page.split('name="assignee"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r">([^<]+)</option>", select) == ["Nobody", "dana", "gus", "root"]

    client.force_login(world.users["superuser"])
    page = client.get(f"/cases/{world.sales.case.pk}/").content.decode()
    select = page.split('name="assignee"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r">([^<]+)</option>", select) == ["Nobody", "root"]


def test_assignee_without_access_is_refused(client, world: World):
    client.force_login(world.users["superuser"])
    case = world.sales.case
    response = _update(client, case, status="closed", assignee=world.users["direct"].pk)
    assert response.status_code == 200
    assert (
        "Select a valid choice. That choice is not one of the available choices." in response.content.decode()
    )
    case.refresh_from_db()
    assert (case.status, case.assignee_id) == ("open", None)
    assert CaseEvent.objects.count() == 0


def test_case_update_needs_csrf(world: World):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["direct"])
    case = world.support.case
    response = _update(client, case, status="closed")
    assert response.status_code == 403
    case.refresh_from_db()
    assert case.status == "open"


def test_case_update_needs_post(client, world: World):
    client.force_login(world.users["direct"])
    assert client.get(reverse("cases:update", args=[world.support.case.pk])).status_code == 405


@pytest.fixture
def lists(world: World):
    support = world.support.mailbox
    gus = world.users["group"]
    return {
        "urgent": CaseFactory(mailbox=support, subject="Printer on fire", status="in_progress", assignee=gus),
        "closed": CaseFactory(
            mailbox=support, subject="Password reset", status="closed", reporter_name="Ann Smith"
        ),
        "won": LeadFactory(
            mailbox=support, name="Big Corp", email="buyer@bigcorp.example", status="won", owner=gus
        ),
        "new": LeadFactory(mailbox=support, name="Small Shop", email="owner@shop.example"),
    }


def _case_ids(response) -> set[int]:
    return {int(pk) for pk in re.findall(r'data-case-id="(\d+)"', response.content.decode())}


def _lead_ids(response) -> set[int]:
    return {int(pk) for pk in re.findall(r'data-lead-id="(\d+)"', response.content.decode())}


def test_case_list_filters(client, world: World, lists):
    gus = world.users["group"]
    client.force_login(gus)
    url = reverse("cases:list")
    base = world.support.case
    assert _case_ids(client.get(url)) == {base.pk, lists["urgent"].pk, lists["closed"].pk}
    assert _case_ids(client.get(url, {"status": "closed"})) == {lists["closed"].pk}
    assert _case_ids(client.get(url, {"person": "me"})) == {lists["urgent"].pk}
    assert _case_ids(client.get(url, {"person": str(gus.pk)})) == {lists["urgent"].pk}
    assert _case_ids(client.get(url, {"person": "none"})) == {base.pk, lists["closed"].pk}
    assert _case_ids(client.get(url, {"q": "fire"})) == {lists["urgent"].pk}
    assert _case_ids(client.get(url, {"q": "ann smith"})) == {lists["closed"].pk}
    assert _case_ids(client.get(url, {"q": f"#{lists['closed'].number}"})) == {lists["closed"].pk}
    assert _case_ids(client.get(url, {"mailbox": world.support.mailbox.pk})) == {
        base.pk,
        lists["urgent"].pk,
        lists["closed"].pk,
    }
    # A mailbox the user cannot see is not a valid filter: ignored, and nothing of it is shown.
    assert _case_ids(client.get(url, {"mailbox": world.sales.mailbox.pk})) == {
        base.pk,
        lists["urgent"].pk,
        lists["closed"].pk,
    }


def test_lead_list_filters(client, world: World, lists):
    client.force_login(world.users["direct"])
    url = reverse("leads:list")
    base = world.support.lead
    assert _lead_ids(client.get(url)) == {base.pk, lists["won"].pk, lists["new"].pk}
    assert _lead_ids(client.get(url, {"status": "won"})) == {lists["won"].pk}
    assert _lead_ids(client.get(url, {"person": str(world.users["group"].pk)})) == {lists["won"].pk}
    assert _lead_ids(client.get(url, {"person": "me"})) == set()
    assert _lead_ids(client.get(url, {"q": "bigcorp"})) == {lists["won"].pk}
    assert _lead_ids(client.get(url, {"q": "shop owner"})) == {lists["new"].pk}


def test_superuser_sees_every_mailbox_in_the_filters(client, world: World):
    client.force_login(world.users["superuser"])
    page = client.get(reverse("cases:list")).content.decode()
    select = page.split('name="mailbox"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r">([^<]+)</option>", select) == ["All mailboxes", "Sales", "Support"]
    client.force_login(world.users["group"])
    page = client.get(reverse("leads:list")).content.decode()
    select = page.split('name="mailbox"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r">([^<]+)</option>", select) == ["All mailboxes", "Support"]


@pytest.fixture
def access_matrix():
    role = GroupFactory()
    box = MailboxFactory()
    other = MailboxFactory()
    users = [
        UserFactory(is_superuser=True),
        UserFactory(is_superuser=True, is_active=False),
        UserFactory(),
        UserFactory(groups=[role]),
        UserFactory(groups=[role], is_active=False),
        UserFactory(),
    ]
    box.authorized_users.add(users[2])
    box.authorized_groups.add(role)
    other.authorized_users.add(users[5])
    return [box, other], users


def test_users_with_access_agrees_with_accessible_to(access_matrix):
    """The assignee choices read the access rule the other way round: both must always agree."""
    mailboxes, users = access_matrix
    for mailbox in mailboxes:
        expected = {
            user.pk for user in users if Mailbox.objects.accessible_to(user).filter(pk=mailbox.pk).exists()
        }
        assert set(users_with_access_to(mailbox=mailbox).values_list("pk", flat=True)) == expected
    assert set(users_with_access_to(mailbox=mailboxes[0]).values_list("pk", flat=True)) == {
        users[0].pk,
        users[2].pk,
        users[3].pk,
    }
