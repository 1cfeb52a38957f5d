"""Who may do what, on every URL of the staff pages: exact status codes for each kind of user.

Support is granted to `direct` (as a user) and to `group` (through their group); Sales to nobody,
so only the superuser sees it. Whatever a user may not see answers 404, exactly like something
that does not exist, also for POST actions; anonymous users are sent to the login page.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.urls import reverse

from mailboxes.models import MailboxViewPreference
from processing.models import CaseEvent

from .conftest import MailboxObjects, World

USERS = ["superuser", "direct", "group", "none"]
# Expected status per user for an object of each mailbox.
SUPPORT = {"superuser": 200, "direct": 200, "group": 200, "none": 404}
SALES = {"superuser": 200, "direct": 404, "group": 404, "none": 404}


def _request(objects: MailboxObjects, name: str):
    """(method, url, data) of the URL `name` aimed at the objects of one mailbox."""
    email, case = objects.email, objects.case
    return {
        "select_view": ("post", reverse("emails:select_view"), {"view": objects.mailbox.pk}),
        "email_detail": ("get", reverse("emails:detail", args=[email.pk]), None),
        "email_text": ("get", reverse("emails:detail", args=[email.pk]) + "?view=text", None),
        "email_body_html": ("get", reverse("emails:body_html", args=[email.pk]), None),
        "email_original": ("get", reverse("emails:original", args=[email.pk]), None),
        "attachment": ("get", reverse("emails:attachment", args=[email.pk, objects.attachment.pk]), None),
        "inline_image": (
            "get",
            reverse("emails:inline_image", args=[email.pk, objects.inline_image.pk]),
            None,
        ),
        "convert_to_case": ("post", reverse("emails:convert_to_case", args=[email.pk]), {}),
        "convert_to_lead": ("post", reverse("emails:convert_to_lead", args=[email.pk]), {}),
        "lead_detail": ("get", reverse("leads:detail", args=[objects.lead.pk]), None),
        "case_detail": ("get", reverse("cases:detail", args=[case.pk]), None),
        "case_update": (
            "post",
            reverse("cases:update", args=[case.pk]),
            {"status": "in_progress", "priority": "high", "assignee": ""},
        ),
    }[name]


# What an allowed user gets: pages 200, actions redirect (302).
ALLOWED_STATUS = {
    "select_view": 302,
    "email_detail": 200,
    "email_text": 200,
    "email_body_html": 200,
    "email_original": 200,
    "attachment": 200,
    "inline_image": 200,
    "convert_to_case": 302,
    "convert_to_lead": 302,
    "lead_detail": 200,
    "case_detail": 200,
    "case_update": 302,
}
MATRIX = [
    (name, mailbox, who, ALLOWED_STATUS[name] if expected[who] == 200 else 404)
    for name in ALLOWED_STATUS
    for mailbox, expected in (("support", SUPPORT), ("sales", SALES))
    for who in USERS
]


def _call(client, method: str, url: str, data):
    return client.post(url, data) if method == "post" else client.get(url)


@pytest.mark.parametrize(("name", "mailbox", "who", "status"), MATRIX)
def test_object_urls(client, world: World, name, mailbox, who, status):
    client.force_login(world.users[who])
    method, url, data = _request(getattr(world, mailbox), name)
    response = _call(client, method, url, data)
    assert response.status_code == status


@pytest.mark.parametrize("name", list(ALLOWED_STATUS))
@pytest.mark.parametrize("mailbox", ["support", "sales"])
def test_anonymous_is_sent_to_login(client, world: World, name, mailbox):
    method, url, data = _request(getattr(world, mailbox), name)
    response = _call(client, method, url, data)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=" + quote(url, safe="/")


@pytest.mark.parametrize("url_name", ["emails:list", "leads:list", "cases:list"])
@pytest.mark.parametrize("who", USERS)
def test_lists_answer_everyone_logged_in(client, world: World, url_name, who):
    client.force_login(world.users[who])
    assert client.get(reverse(url_name)).status_code == 200


@pytest.mark.parametrize("url_name", ["emails:list", "leads:list", "cases:list"])
def test_lists_send_anonymous_to_login(client, world: World, url_name):
    response = client.get(reverse(url_name))
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={reverse(url_name)}"


def _ids(response, attribute: str) -> set[int]:
    import re

    return {int(pk) for pk in re.findall(rf'{attribute}="(\d+)"', response.content.decode())}


@pytest.mark.parametrize(
    ("who", "mailboxes"),
    [("superuser", ["support", "sales"]), ("direct", ["support"]), ("group", ["support"]), ("none", [])],
)
def test_lists_show_only_visible_objects(client, world: World, who, mailboxes):
    client.force_login(world.users[who])
    visible = [getattr(world, name) for name in mailboxes]
    emails = _ids(client.get(reverse("emails:list")), "data-email-id")
    assert emails == {pk for o in visible for pk in (o.email.pk, o.lead_email.pk, o.case_email.pk)}
    assert _ids(client.get(reverse("leads:list")), "data-lead-id") == {o.lead.pk for o in visible}
    assert _ids(client.get(reverse("cases:list")), "data-case-id") == {o.case.pk for o in visible}


@pytest.mark.parametrize(
    ("who", "choice", "status", "shown"),
    [
        ("superuser", "sales", 302, "sales"),
        ("superuser", "support", 302, "support"),
        ("direct", "support", 302, "support"),
        ("group", "support", 302, "support"),
        ("direct", "sales", 404, None),
        ("none", "support", 404, None),
    ],
)
def test_view_selector_filters_the_grid_by_mailbox(client, world: World, who, choice, status, shown):
    user = world.users[who]
    client.force_login(user)
    response = client.post(reverse("emails:select_view"), {"view": getattr(world, choice).mailbox.pk})
    assert response.status_code == status
    preference = MailboxViewPreference.objects.filter(user=user).first()
    if shown is None:
        assert preference is None
        return
    assert response["Location"] == reverse("emails:list")
    assert preference.mailbox == getattr(world, shown).mailbox
    objects = getattr(world, shown)
    listed = _ids(client.get(reverse("emails:list")), "data-email-id")
    assert listed == {objects.email.pk, objects.lead_email.pk, objects.case_email.pk}


@pytest.mark.parametrize("value", ["", "abc", "999999", "-1"])
def test_view_selector_refuses_unknown_values(client, world: World, value):
    client.force_login(world.users["superuser"])
    assert client.post(reverse("emails:select_view"), {"view": value}).status_code == 404


def test_lost_access_falls_back_to_all_mailboxes(client, world: World):
    user = world.users["direct"]
    MailboxViewPreference.objects.create(user=user, mailbox=world.sales.mailbox)  # stale choice
    client.force_login(user)
    listed = _ids(client.get(reverse("emails:list")), "data-email-id")
    support = world.support
    assert listed == {support.email.pk, support.lead_email.pk, support.case_email.pk}


def test_refused_case_update_changes_nothing(client, world: World):
    client.force_login(world.users["direct"])
    case = world.sales.case
    response = client.post(
        reverse("cases:update", args=[case.pk]), {"status": "closed", "priority": "urgent", "assignee": ""}
    )
    assert response.status_code == 404
    case.refresh_from_db()
    assert (case.status, case.priority) == ("open", "normal")
    assert CaseEvent.objects.count() == 0


def test_refused_conversion_creates_nothing(client, world: World):
    client.force_login(world.users["group"])
    email = world.sales.email
    assert client.post(reverse("emails:convert_to_case", args=[email.pk])).status_code == 404
    assert client.post(reverse("emails:convert_to_lead", args=[email.pk])).status_code == 404
    email.refresh_from_db()
    assert (email.case_id, email.lead_id) == (None, None)


@pytest.mark.parametrize("url_name", ["emails:detail", "emails:body_html"])
def test_nonexistent_email_is_404_too(client, world: World, url_name):
    client.force_login(world.users["superuser"])
    assert client.get(reverse(url_name, args=[987654])).status_code == 404


def test_inactive_user_sees_nothing(client, world: World):
    user = world.users["direct"]
    client.force_login(user)
    user.is_active = False
    user.save()
    # Django logs an inactive user out on the next request: back to the login page.
    response = client.get(reverse("emails:detail", args=[world.support.email.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_home_redirects_to_my_emails(client, world: World):
    client.force_login(world.users["direct"])
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/emails/"


@pytest.mark.parametrize(("who", "shown"), [("superuser", True), ("direct", False)])
def test_admin_link_only_for_staff(client, world: World, who, shown):
    client.force_login(world.users[who])
    page = client.get(reverse("emails:list")).content.decode()
    assert ('href="/admin/"' in page) is shown
    assert 'href="/leads/"' in page
    assert 'href="/cases/"' in page


@pytest.mark.parametrize(
    "name", ["email_detail", "email_text", "email_body_html", "lead_detail", "case_detail", "select_view"]
)
def test_pages_never_decrypt_mailbox_secrets(client, world: World, monkeypatch, name):
    """Loading a mailbox row decrypts its passwords: the staff pages must not load them."""
    decrypted = []
    monkeypatch.setattr("mailboxes.encryption.decrypt_secret", lambda stored: decrypted.append(stored) or "")
    client.force_login(world.users["direct"])
    method, url, data = _request(world.support, name)
    for target in (url, reverse("emails:list"), reverse("leads:list"), reverse("cases:list")):
        response = _call(client, method, target, data) if target == url else client.get(target)
        assert response.status_code in (200, 302)
    assert decrypted == []


def test_log_in_and_out(client, world: World):
    page = client.get("/accounts/login/?next=/cases/")
    assert page.status_code == 200
    assert 'name="next" value="/cases/"' in page.content.decode()
    wrong = client.post("/accounts/login/", {"username": "dana", "password": "nope", "next": "/cases/"})
    assert wrong.status_code == 200
    assert "Your username and password didn't match." in wrong.content.decode()
    response = client.post("/accounts/login/", {"username": "dana", "password": "pw", "next": "/cases/"})
    assert response.status_code == 302
    assert response["Location"] == "/cases/"
    assert client.get("/cases/").status_code == 200
    assert client.get("/accounts/logout/").status_code == 405  # logging out is a POST (CSRF)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/cases/").status_code == 302
