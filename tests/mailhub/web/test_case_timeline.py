"""The case timeline (emails in and out, notes, history, one chronological list paged by keyset),
the note forms of the case and email pages (access, CSRF, never emailed, hostile text), and the
first-response time on the case pages."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from autoresponse.models import AutoReply
from mailboxes.models import Email, EmailDirection, OutboundMessage, OutboundStatus
from mailhub.templatetags.mailhub_dates import duration
from mailhub.web.leads_cases.timeline import (
    NOTE_SHOWN_CHARS,
    TIMELINE_PAGE_SIZE,
    Position,
    case_timeline_page,
)
from processing.models import CaseEvent, Note
from tests.factories import CaseFactory, EmailFactory, MailboxFactory, UserFactory

from .conftest import World

pytestmark = pytest.mark.django_db


def _timeline(page: str) -> str:
    return re.sub(r"\s+", " ", page.split('data-testid="case-timeline"', 1)[1].split("</ol>", 1)[0])


def _note_urls(world: World) -> list[str]:
    return [
        reverse("cases:note_add", args=[world.support.case.pk]),
        reverse("emails:note_add", args=[world.support.case_email.pk]),
        reverse("emails:note_add", args=[world.support.email.pk]),
    ]


# -- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["none", "other_mailbox"])
def test_note_urls_are_404_without_access(client, world: World, who):
    if who == "none":
        user = world.users["none"]
    else:
        user = UserFactory(username="olga")
        MailboxFactory(label="Other").authorized_users.add(user)
    client.force_login(user)
    for url in _note_urls(world):
        assert client.post(url, {"body": "sneaky"}).status_code == 404, url
    assert Note.objects.count() == 0


def test_note_urls_need_a_login(client, world: World):
    for url in _note_urls(world):
        response = client.post(url, {"body": "anonymous"})
        assert (response.status_code, response["Location"].split("?")[0]) == (302, "/accounts/login/")
    assert Note.objects.count() == 0


@pytest.mark.parametrize("who", ["direct", "group", "superuser"])
def test_note_urls_take_post_only(client, world: World, who):
    client.force_login(world.users[who])
    for url in _note_urls(world):
        assert client.get(url).status_code == 405, url


def test_note_urls_refuse_a_post_without_the_csrf_token(world: World):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["direct"])
    for url in _note_urls(world):
        assert client.post(url, {"body": "forged"}).status_code == 403, url
    assert Note.objects.count() == 0


def test_the_note_forms_carry_the_csrf_token(client, world: World):
    client.force_login(world.users["direct"])
    for page, action in [
        (world.support.case.get_absolute_url(), _note_urls(world)[0]),
        (world.support.email.get_absolute_url(), _note_urls(world)[2]),
    ]:
        html = client.get(page).content.decode()
        form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
        assert 'name="csrfmiddlewaretoken"' in form
        assert '<textarea name="body"' in form
        assert 'maxlength="100000"' in form


# -- notes on the pages --------------------------------------------------------------------------


def test_a_note_added_on_the_case_page_is_in_its_timeline(client, world: World):
    dana = world.users["group"]
    case = world.support.case
    client.force_login(dana)
    response = client.post(reverse("cases:note_add", args=[case.pk]), {"body": "Called back\nno answer"})
    note = Note.objects.get()
    assert (note.case, note.email, note.author, note.body) == (case, None, dana, "Called back\nno answer")
    assert response["Location"] == f"/cases/{case.pk}/?latest=1#note-{note.pk}"
    timeline = _timeline(client.get(response["Location"]).content.decode())
    assert (
        f'<li class="entry-note" data-kind="note" id="note-{note.pk}"> '
        "<strong>gus</strong> added an internal note" in timeline
    )
    assert '<div class="note-body">Called back<br>no answer</div>' in timeline


def test_a_note_on_an_email_of_a_case_shows_on_both_pages(client, world: World):
    client.force_login(world.users["direct"])
    email, case = world.support.case_email, world.support.case
    response = client.post(reverse("emails:note_add", args=[email.pk]), {"body": "Same as #1002"})
    note = Note.objects.get()
    assert (note.case, note.email) == (case, email)
    assert response["Location"] == f"/emails/{email.pk}/#note-{note.pk}"
    email_page = client.get(email.get_absolute_url()).content.decode()
    notes = email_page.split('data-testid="email-notes"', 1)[1].split("</ul>", 1)[0]
    assert "Same as #1002" in notes
    timeline = _timeline(client.get(case.get_absolute_url()).content.decode())
    assert f'added an internal note on <a href="/emails/{email.pk}/">an email</a>' in timeline


def test_a_note_on_an_email_shows_in_the_timeline_of_the_case_it_joins_later(client, world: World):
    client.force_login(world.users["direct"])
    email = world.support.email
    client.post(reverse("emails:note_add", args=[email.pk]), {"body": "Before the case"})
    assert Note.objects.get().case is None
    Email.objects.filter(pk=email.pk).update(case=world.support.case)
    timeline = _timeline(client.get(world.support.case.get_absolute_url()).content.decode())
    assert "Before the case" in timeline


def test_the_email_page_shows_the_notes_of_its_case(client, world: World):
    client.force_login(world.users["direct"])
    Note.objects.create(case=world.support.case, author_name="gus", body="On the case itself")
    page = client.get(world.support.case_email.get_absolute_url()).content.decode()
    notes = page.split('data-testid="email-notes"', 1)[1].split("</ul>", 1)[0]
    assert "<strong>gus</strong> on the case" in notes
    assert "On the case itself" in notes


@pytest.mark.parametrize("body", ["", "   \n ", "x" * 100_001])
def test_a_refused_note_is_shown_again_on_the_case_page(client, world: World, body):
    client.force_login(world.users["direct"])
    response = client.post(reverse("cases:note_add", args=[world.support.case.pk]), {"body": body})
    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()
    assert Note.objects.count() == 0


@pytest.mark.parametrize("body", ["", "x" * 100_001])
def test_a_refused_note_on_an_email_page_says_why(client, world: World, body):
    client.force_login(world.users["direct"])
    email = world.support.email
    response = client.post(reverse("emails:note_add", args=[email.pk]), {"body": body}, follow=True)
    assert response.redirect_chain == [(f"/emails/{email.pk}/", 302)]
    assert "Note not added:" in response.content.decode()
    assert Note.objects.count() == 0


@pytest.mark.integration
def test_a_note_never_reaches_the_smtp_server(client, smtp_server, world: World):
    mailbox = world.support.mailbox
    mailbox.smtp_host, mailbox.smtp_port = smtp_server.host, smtp_server.port
    mailbox.smtp_security, mailbox.smtp_username = "none", ""
    mailbox.save()
    client.force_login(world.users["direct"])
    for url in _note_urls(world):
        assert client.post(url, {"body": "Internal: customer is difficult"}).status_code == 302
    assert Note.objects.count() == 3
    assert smtp_server.messages == []
    assert (OutboundMessage.objects.count(), AutoReply.objects.count()) == (0, 0)
    assert Email.objects.filter(direction=EmailDirection.OUTGOING).count() == 0


def test_hostile_notes_are_escaped_and_cut(client, world: World):
    client.force_login(world.users["direct"])
    case = world.support.case
    client.post(reverse("cases:note_add", args=[case.pk]), {"body": '<script>alert("x")</script><b>'})
    # Stored around the service (an import, a bug): a megabyte of markup, shown only in part.
    huge = Note.objects.create(case=case, author_name="<img src=x onerror=alert(1)>", body="<b>x" * 250_000)
    page = client.get(case.get_absolute_url()).content.decode()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "<b>x<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    entry = page.split(f'id="note-{huge.pk}"', 1)[1].split("</li>", 1)[0]
    assert entry.count("&lt;b&gt;x") == NOTE_SHOWN_CHARS // 4
    assert f"Only the first {NOTE_SHOWN_CHARS} of 1000000 characters are shown." in entry
    assert len(page) < 100_000


# -- what the timeline shows ---------------------------------------------------------------------


def test_timeline_interleaves_emails_notes_and_events_by_time(client, world: World):
    dana = world.users["direct"]
    case = CaseFactory(mailbox=world.support.mailbox, subject="Printer")
    t0 = timezone.now() - timedelta(days=1)
    EmailFactory(mailbox=case.mailbox, case=case, subject="It smokes", received_at=t0, from_name="Ann Lee")
    Note.objects.create(case=case, author=dana, author_name="dana", body="Asked facilities", created_at=t0)
    answer = EmailFactory(
        mailbox=case.mailbox,
        case=case,
        subject="Re: It smokes",
        received_at=t0 + timedelta(minutes=10),
        direction=EmailDirection.OUTGOING,
        sent_by=dana,
        uidvalidity=None,
        uid=None,
    )
    OutboundMessage.objects.create(
        email=answer,
        submission_key="k1",
        sent_by=dana,
        status=OutboundStatus.FAILED,
        reason="550 no such user",
    )
    CaseEvent.objects.create(
        case=case, username="", field="status", old_value="waiting", new_value="open", created_at=t0
    )
    case.first_response_at = case.created_at + timedelta(hours=2, minutes=5)
    case.save()
    CaseEvent.objects.create(
        case=case,
        user=dana,
        username="dana",
        field="first_response",
        new_value="",
        created_at=t0 + timedelta(minutes=11),
    )
    client.force_login(dana)
    timeline = _timeline(client.get(case.get_absolute_url()).content.decode())
    kinds = re.findall(r'data-kind="(\w+)"', timeline)
    # Same instant: email, then note, then event (the order of kinds); then by time.
    assert kinds == ["email", "note", "event", "email", "event"]
    assert '<strong>Ann Lee</strong> <span class="muted">&lt;alice@example.com&gt;</span> wrote' in timeline
    assert (
        "<strong>mailhub</strong> changed status from <em>Waiting for customer</em> to <em>Open</em>"
        in timeline
    )
    assert (
        '<strong>dana</strong> sent <span class="badge outbound-failed" '
        'data-testid="outbound-status">Not sent</span>' in timeline
    )
    assert "550 no such user" in timeline
    assert "<strong>dana</strong> answered first, after 2 h 5 min" in timeline


def test_timeline_leaves_out_notes_on_emails_the_user_cannot_see(world: World):
    case = world.support.case
    hidden = EmailFactory(mailbox=world.sales.mailbox, case=case)  # a case email of another mailbox
    Note.objects.create(email=hidden, author_name="root", body="secret")
    Note.objects.create(email=world.support.case_email, author_name="gus", body="visible")
    page = case_timeline_page(user=world.users["direct"], case=case)
    assert [entry.note.shown for entry in page.entries if entry.note] == ["visible"]
    assert page.counts == {"emails": 1, "notes": 1, "events": 0}
    assert case_timeline_page(user=world.users["superuser"], case=case).counts["notes"] == 2


def _busy_case(mailbox, emails: int, notes: int, events: int):
    """A case whose entries are spread in time, with some sharing an instant across kinds."""
    case = CaseFactory(mailbox=mailbox)
    start = timezone.now() - timedelta(days=30)
    for n in range(emails):
        EmailFactory(mailbox=mailbox, case=case, subject=f"e{n}", received_at=start + timedelta(minutes=n))
    for n in range(notes):
        Note.objects.create(
            case=case, author_name="x", body=f"n{n}", created_at=start + timedelta(minutes=3 * n)
        )
    for n in range(events):
        CaseEvent.objects.create(
            case=case,
            username="x",
            field="priority",
            new_value=f"v{n}",
            created_at=start + timedelta(minutes=5 * n),
        )
    return case


def _label(entry) -> str:
    return entry.email.subject if entry.email else entry.note.shown if entry.note else entry.event.new_value


def test_walking_the_timeline_forwards_and_backwards_shows_each_entry_once_in_order(world: World):
    user = world.users["direct"]
    case = _busy_case(world.support.mailbox, emails=57, notes=20, events=12)
    expected = sorted(
        [(e.received_at, 0, e.pk, e.subject) for e in case.emails.all()]
        + [(n.created_at, 1, n.pk, n.body) for n in case.notes.all()]
        + [(v.created_at, 2, v.pk, v.new_value) for v in case.events.all()]
    )
    expected_labels = [label for *_position, label in expected]
    assert len(expected_labels) == 89

    forwards, page = [], case_timeline_page(user=user, case=case, size=10)
    assert page.has_earlier is False
    while True:
        forwards.extend(_label(entry) for entry in page.entries)
        if not page.has_later:
            break
        page = case_timeline_page(user=user, case=case, after=page.later_cursor, size=10)
    assert forwards == expected_labels

    backwards, page = [], case_timeline_page(user=user, case=case, latest=True, size=10)
    assert page.has_later is False
    while True:
        backwards[:0] = [_label(entry) for entry in page.entries]
        if not page.has_earlier:
            break
        page = case_timeline_page(user=user, case=case, before=page.earlier_cursor, size=10)
    assert backwards == expected_labels


def test_timeline_pages_on_the_case_page(client, world: World):
    client.force_login(world.users["direct"])
    case = _busy_case(world.support.mailbox, emails=TIMELINE_PAGE_SIZE + 7, notes=0, events=0)
    first = client.get(case.get_absolute_url()).content.decode()
    assert _timeline(first).count('data-kind="email"') == TIMELINE_PAGE_SIZE
    assert ">e49<" in first
    assert ">e50<" not in first
    later = re.search(r'href="\?after=([^"#]+)#timeline" rel="next"', first)[1]
    second = client.get(case.get_absolute_url(), {"after": later.replace("%2E", ".")}).content.decode()
    assert _timeline(second).count('data-kind="email"') == 7
    assert ">e50<" in second
    assert ">e56<" in second
    latest = client.get(case.get_absolute_url(), {"latest": "1"}).content.decode()
    assert ">e56<" in latest
    assert ">e7<" in latest
    assert ">e6<" not in latest
    assert "57 emails · 0 notes · 0 changes" in first


@pytest.mark.parametrize(
    "cursor",
    ["", "x", "1.9.1", "1.1", "9" * 40 + ".0.1", "999999999999999999.0.1", "-999999999999999999.2.5"],
)
def test_a_cursor_that_cannot_be_read_gives_an_end_of_the_timeline(client, world: World, cursor):
    client.force_login(world.users["direct"])
    case = world.support.case
    for name in ("after", "before"):
        response = client.get(case.get_absolute_url(), {name: cursor})
        assert response.status_code == 200
        assert "Support case email" in response.content.decode()


def test_position_text_round_trips():
    at = timezone.now()
    position = Position(at=at, kind=1, pk=42)
    assert Position.from_text(position.to_text()) == position


def test_a_page_of_a_case_with_10000_emails_reads_one_page_of_each_source(world: World):
    case = CaseFactory(mailbox=world.support.mailbox)
    start = timezone.now() - timedelta(days=100)
    template = EmailFactory.build(mailbox=case.mailbox)
    Email.objects.bulk_create(
        Email(
            mailbox=case.mailbox,
            case=case,
            uidvalidity=7,
            uid=n,
            subject=f"bulk {n}",
            received_at=start + timedelta(seconds=n),
            raw="raw/x.eml",
            content_sha256=template.content_sha256,
            identity=f"bulk-{n}",
        )
        for n in range(10_000)
    )
    with CaptureQueriesContext(connection) as queries:
        page = case_timeline_page(user=world.users["direct"], case=case, latest=True)
    assert [entry.email.subject for entry in page.entries][-2:] == ["bulk 9998", "bulk 9999"]
    assert len(page.entries) == TIMELINE_PAGE_SIZE
    selects = [q["sql"] for q in queries.captured_queries if "ORDER BY" in q["sql"]]
    assert len(selects) == 3
    assert all(f"LIMIT {TIMELINE_PAGE_SIZE + 1}" in sql for sql in selects)


# -- first response and status on the case pages ------------------------------------------------


def test_case_pages_show_the_first_response_time(client, world: World):
    case = world.support.case
    case.first_response_at = case.created_at + timedelta(hours=2, minutes=5, seconds=59)
    case.save()
    client.force_login(world.users["direct"])
    detail = client.get(case.get_absolute_url()).content.decode()
    assert re.search(r'data-testid="first-response">after 2 h 5 min <span', detail)
    listing = client.get(reverse("cases:list")).content.decode()
    assert 'data-testid="first-response">after 2 h 5 min</td>' in listing


def test_an_unanswered_case_says_so(client, world: World):
    client.force_login(world.users["direct"])
    detail = client.get(world.support.case.get_absolute_url()).content.decode()
    assert 'data-testid="first-response"><span class="muted">not answered yet</span>' in detail


def test_the_case_form_offers_waiting_for_customer(client, world: World):
    client.force_login(world.users["direct"])
    case = world.support.case
    detail = client.get(case.get_absolute_url()).content.decode()
    assert '<option value="waiting">Waiting for customer</option>' in detail
    payload = {"status": "waiting", "priority": case.priority, "assignee": ""}
    assert client.post(reverse("cases:update", args=[case.pk]), payload).status_code == 302
    case.refresh_from_db()
    assert case.status == "waiting"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=59), "under 1 min"),
        (timedelta(minutes=1), "1 min"),
        (timedelta(minutes=59, seconds=59), "59 min"),
        (timedelta(hours=2), "2 h"),
        (timedelta(hours=2, minutes=5, seconds=30), "2 h 5 min"),
        (timedelta(days=3), "3 d"),
        (timedelta(days=3, hours=4, minutes=59), "3 d 4 h"),
        (timedelta(seconds=-5), "under 1 min"),
        (None, ""),
    ],
)
def test_duration_reads_like_people_say_it(value, text):
    assert duration(value) == text
