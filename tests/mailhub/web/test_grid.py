"""My Emails' grid: seek pagination, sorting, filters, search, new counts, constant queries."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailboxes.models import Email, MailboxViewPreference, MailboxVisit
from mailboxes.services.visits import mailbox_visits_record
from mailhub.web.emails.grid import EmailGridQuery, email_grid_cursor_at, email_grid_page
from mailhub.web.emails.view_selector import email_grid_rows, email_view_for_user
from tests.factories import CaseFactory, EmailFactory, LeadFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def listed_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-email-id="(\d+)"', response.content.decode())]


def link(response, rel: str) -> str | None:
    match = re.search(rf'href="([^"]+)" rel="{rel}"', response.content.decode())
    return html.unescape(match.group(1)) if match else None


def selector_counts(page: str) -> dict[str, str]:
    """{view value: new count} of the view selector's menu."""
    pattern = r'value="(\w+)"[^>]*>\s*<span>[^<]+</span>\s*<span class="count[^"]*"[^>]*>(\d+\+?)<'
    return dict(re.findall(pattern, page))


def page_number(response) -> str:
    return re.search(r'data-testid="page-number">Page (\d+)<', response.content.decode()).group(1)


@pytest.fixture
def reader():
    user = UserFactory(username="reader")
    mailbox = MailboxFactory(label="Support")
    mailbox.authorized_users.add(user)
    return user, mailbox


@pytest.fixture
def sixty(reader) -> list[Email]:
    """60 emails; groups of three share one received_at, so the id must break the ties."""
    _user, mailbox = reader
    return [
        EmailFactory(
            mailbox=mailbox,
            received_at=START + timedelta(minutes=n // 3),
            from_address=f"sender{n % 7}@example.com",
            subject=f"{'ABC'[n % 3]}subject {n:02d}",
        )
        for n in range(60)
    ]


def newest_first(emails: list[Email]) -> list[int]:
    return [e.pk for e in sorted(emails, key=lambda e: (e.received_at, e.pk), reverse=True)]


def test_pages_walk_forward_and_back_over_every_email_once(client, reader, sixty):
    client.force_login(reader[0])
    first = client.get(reverse("emails:list"), {"per_page": 25})
    second = client.get(link(first, "next"))
    third = client.get(link(second, "next"))
    assert [page_number(r) for r in (first, second, third)] == ["1", "2", "3"]
    assert listed_ids(first) + listed_ids(second) + listed_ids(third) == newest_first(sixty)
    assert [len(listed_ids(r)) for r in (first, second, third)] == [25, 25, 10]
    assert link(third, "next") is None
    assert link(first, "prev") is None

    back_to_second = client.get(link(third, "prev"))
    assert listed_ids(back_to_second) == listed_ids(second)
    assert page_number(back_to_second) == "2"
    back_to_first = client.get(link(back_to_second, "prev"))
    assert listed_ids(back_to_first) == listed_ids(first)
    assert page_number(back_to_first) == "1"
    assert link(back_to_first, "prev") is None


def test_sort_by_sender_then_id_across_pages(client, reader, sixty):
    client.force_login(reader[0])
    first = client.get(reverse("emails:list"), {"sort": "sender", "order": "asc", "per_page": 25})
    pages = [first]
    while link(pages[-1], "next"):
        pages.append(client.get(link(pages[-1], "next")))
    expected = [e.pk for e in sorted(sixty, key=lambda e: (e.from_address, e.pk))]
    assert [pk for page in pages for pk in listed_ids(page)] == expected


def test_sort_by_subject_ignores_case_and_descends_on_second_click(client, reader):
    user, mailbox = reader
    banana = EmailFactory(mailbox=mailbox, subject="banana")
    apple = EmailFactory(mailbox=mailbox, subject="Apple")
    cherry = EmailFactory(mailbox=mailbox, subject="cherry")
    client.force_login(user)
    ascending = client.get(reverse("emails:list"), {"sort": "subject"})
    assert listed_ids(ascending) == [apple.pk, banana.pk, cherry.pk]
    reversed_link = re.search(r'<a href="([^"]+)" class="sorted">Subject', ascending.content.decode()).group(
        1
    )
    assert listed_ids(client.get(html.unescape(reversed_link))) == [cherry.pk, banana.pk, apple.pk]


def test_received_ascending(client, reader, sixty):
    client.force_login(reader[0])
    response = client.get(reverse("emails:list"), {"order": "asc", "per_page": 100})
    assert listed_ids(response) == list(reversed(newest_first(sixty)))


@pytest.fixture
def varied(reader):
    _user, mailbox = reader
    lead = LeadFactory(mailbox=mailbox)
    case = CaseFactory(mailbox=mailbox)
    return {
        "lead": EmailFactory(mailbox=mailbox, lead=lead, received_at=START),
        "case": EmailFactory(mailbox=mailbox, case=case, received_at=START + timedelta(days=1)),
        "plain": EmailFactory(mailbox=mailbox, received_at=START + timedelta(days=2)),
        "attached": EmailFactory(
            mailbox=mailbox, has_attachments=True, received_at=START + timedelta(days=3)
        ),
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"relation": "lead"}, ["lead"]),
        ({"relation": "case"}, ["case"]),
        ({"relation": "none"}, ["attached", "plain"]),
        ({"attachments": "1"}, ["attached"]),
        ({"received_from": "2026-03-02", "received_until": "2026-03-03"}, ["plain", "case"]),
        ({"received_from": "2026-03-04"}, ["attached"]),
        ({"received_until": "2026-03-01"}, ["lead"]),
        ({"relation": "none", "attachments": "1"}, ["attached"]),
        # An impossible range is refused (and ignored) rather than answered with nothing.
        (
            {"received_from": "2026-03-04", "received_until": "2026-03-01"},
            ["attached", "plain", "case", "lead"],
        ),
        ({"relation": "bogus", "received_from": "not a date"}, ["attached", "plain", "case", "lead"]),
    ],
)
def test_filters(client, reader, varied, params, expected):
    client.force_login(reader[0])
    response = client.get(reverse("emails:list"), params)
    assert listed_ids(response) == [varied[name].pk for name in expected]


@pytest.fixture
def searchable(reader):
    _user, mailbox = reader
    return {
        "invoice": EmailFactory(mailbox=mailbox, subject="Invoice 2026-114 overdue", text_body="Please pay"),
        "refund": EmailFactory(mailbox=mailbox, subject="Hello", text_body="I want a refund for order 5531"),
        "sender": EmailFactory(
            mailbox=mailbox, subject="Question", from_name="Zoë Quill", from_address="zoe.quill@acme.example"
        ),
        "accent": EmailFactory(mailbox=mailbox, subject="Café crème", text_body="Grüße"),
    }


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("invoice", ["invoice"]),
        ("INVOICE", ["invoice"]),
        ("inv", ["invoice"]),  # a word prefix
        ("refund", ["refund"]),  # in the body
        ("5531", ["refund"]),
        ("refund 5531", ["refund"]),  # every word must match
        ("refund invoice", []),
        ("quill", ["sender"]),  # sender name
        ("acme", ["sender"]),  # sender address
        ("zoe.quill@acme.example", ["sender"]),
        ('"overdue" (pay*', ["invoice"]),  # quotes, parentheses, stars: not query syntax
        ("!overdue:*", ["invoice"]),  # not PostgreSQL's NOT either
        ("crème", ["accent"]),
        ("nothing-like-this", []),
    ],
)
def test_search(client, reader, searchable, search, expected):
    client.force_login(reader[0])
    response = client.get(reverse("emails:list"), {"q": search})
    assert sorted(listed_ids(response)) == sorted(searchable[name].pk for name in expected)


def test_search_index_follows_updates_and_deletes(client, reader):
    user, mailbox = reader
    email = EmailFactory(mailbox=mailbox, subject="alpha")
    client.force_login(user)
    assert listed_ids(client.get(reverse("emails:list"), {"q": "alpha"})) == [email.pk]
    Email.objects.filter(pk=email.pk).update(subject="omega")
    assert listed_ids(client.get(reverse("emails:list"), {"q": "alpha"})) == []
    assert listed_ids(client.get(reverse("emails:list"), {"q": "omega"})) == [email.pk]
    # Processing updates (status, case) keep the email findable.
    Email.objects.filter(pk=email.pk).update(processing_status="done")
    assert listed_ids(client.get(reverse("emails:list"), {"q": "omega"})) == [email.pk]
    email.delete()
    assert listed_ids(client.get(reverse("emails:list"), {"q": "omega"})) == []


def test_search_pages_with_cursor(client, reader):
    user, mailbox = reader
    matching = [
        EmailFactory(mailbox=mailbox, subject=f"parcel {n}", received_at=START + timedelta(hours=n))
        for n in range(30)
    ]
    EmailFactory(mailbox=mailbox, subject="unrelated")
    client.force_login(user)
    first = client.get(reverse("emails:list"), {"q": "parcel", "per_page": 25})
    second = client.get(link(first, "next"))
    assert listed_ids(first) + listed_ids(second) == newest_first(matching)
    assert link(second, "next") is None


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "WyJub3QgYSBkYXRlIiwxXQ", "W10"])
def test_broken_cursor_shows_the_first_page(client, reader, sixty, cursor):
    client.force_login(reader[0])
    response = client.get(reverse("emails:list"), {"after": cursor, "page": 7, "per_page": 25})
    assert response.status_code == 200
    assert listed_ids(response) == newest_first(sixty)[:25]
    assert page_number(response) == "1"


def test_grid_queries_do_not_grow_with_page_size_or_depth(client, reader, django_assert_num_queries):
    user, mailbox = reader
    lead = LeadFactory(mailbox=mailbox)
    for n in range(240):  # badges and relations on every row: an N+1 would show
        EmailFactory(
            mailbox=mailbox,
            received_at=START + timedelta(minutes=n),
            lead=lead if n % 2 else None,
            case=CaseFactory(mailbox=mailbox) if n % 2 == 0 and n < 120 else None,
            has_attachments=n % 3 == 0,
        )
    client.force_login(user)
    # session, user, latest email id, mailboxes with new counts, saved view, the page's keys, its
    # rows, "seen" upsert
    for per_page in (25, 100):
        with django_assert_num_queries(8):
            response = client.get(reverse("emails:list"), {"per_page": per_page})
        assert len(listed_ids(response)) == per_page
    # Deeper pages: the same minus the "seen" upsert, which only the first page does.
    for per_page, position in ((25, 200), (100, 100)):
        after = email_grid_cursor_at(user=user, mailbox_ids=None, query=EmailGridQuery(), position=position)
        with django_assert_num_queries(7):
            response = client.get(reverse("emails:list"), {"per_page": per_page, "after": after, "page": 9})
        assert len(listed_ids(response)) == min(per_page, 240 - position)


def test_grid_reads_no_whole_body(reader):
    user, mailbox = reader
    EmailFactory(mailbox=mailbox, text_body="x" * 10_000, html_body="<p>big</p>")
    with CaptureQueriesContext(connection) as queries:
        page = email_grid_page(user=user, mailbox_ids=None, query=EmailGridQuery())
    assert len(page.emails) == 1
    assert page.emails[0].snippet == "x" * 160
    keys_sql, grid_sql = [q["sql"] for q in queries.captured_queries]
    assert '"text_body"' not in keys_sql
    # The page's keys come from the email index alone: no lead, case or mailbox row joined.
    assert '"processing_lead"' not in keys_sql
    assert '"processing_case"' not in keys_sql
    assert 'JOIN "mailboxes_mailbox"' not in keys_sql
    assert grid_sql.count('"mailboxes_email"."text_body"') == 1
    assert re.search(r'SUBSTR\w*\("mailboxes_email"\."text_body"', grid_sql)
    assert '"html_body"' not in grid_sql
    assert '"headers"' not in grid_sql


def test_new_counts_and_the_choice_survive_visits(client, reader):
    user, support = reader
    sales = MailboxFactory(label="Sales")
    sales.authorized_users.add(user)
    old = [EmailFactory(mailbox=support) for _ in range(3)] + [EmailFactory(mailbox=sales)]
    client.force_login(user)

    page = client.get(reverse("emails:list")).content.decode()
    counts = selector_counts(page)
    assert counts == {"all": "4", str(support.pk): "3", str(sales.pk): "1"}
    assert page.count('class="is-new"') == 4
    # Each mailbox is seen up to its own newest email (not one global id: see latest_email_ids).
    assert dict(MailboxVisit.objects.filter(user=user).values_list("mailbox_id", "seen_up_to_email_id")) == {
        support.pk: old[2].pk,
        sales.pk: old[3].pk,
    }

    page = client.get(reverse("emails:list")).content.decode()
    counts = selector_counts(page)
    assert counts == {"all": "0", str(support.pk): "0", str(sales.pk): "0"}
    assert page.count('class="is-new"') == 0

    client.post(reverse("emails:select_view"), {"view": sales.pk})
    fresh = EmailFactory(mailbox=support)
    page = client.get(reverse("emails:list")).content.decode()
    assert re.search(r'data-testid="current-view">Sales<', page)
    counts = selector_counts(page)
    assert counts == {"all": "1", str(support.pk): "1", str(sales.pk): "0"}
    assert f'data-email-id="{fresh.pk}"' not in page  # Sales view: support's email not listed

    # Another session (another device): the choice is in the database, not in the session.
    client.logout()
    client.force_login(user)
    page = client.get(reverse("emails:list")).content.decode()
    assert re.search(r'data-testid="current-view">Sales<', page)
    assert MailboxViewPreference.objects.get(user=user).mailbox == sales

    client.post(reverse("emails:select_view"), {"view": "all"})
    assert MailboxViewPreference.objects.get(user=user).mailbox is None


def test_new_count_is_capped(client, reader):
    user, mailbox = reader
    Email.objects.bulk_create(
        [
            EmailFactory.build(mailbox=mailbox, uid=10_000 + n, identity=f"bulk-{n}", raw="raw/x.eml")
            for n in range(1001)
        ]
    )
    client.force_login(user)
    page = client.get(reverse("emails:list"), {"per_page": 25}).content.decode()
    assert page.count(">999+<") == 3  # the summary, "All my mailboxes" and the mailbox


def test_user_without_mailbox_sees_an_explanation(client, db):
    client.force_login(UserFactory())
    page = client.get(reverse("emails:list")).content.decode()
    assert "You have no mailbox yet: ask an administrator for access." in page


def test_rows_are_new_above_their_own_mailbox_watermark(reader):
    user, support = reader
    sales = MailboxFactory(label="Sales")
    sales.authorized_users.add(user)
    seen_sales = EmailFactory(mailbox=sales)
    unseen_sales = EmailFactory(mailbox=sales)  # below support's watermark, above sales'
    seen_support = EmailFactory(mailbox=support)
    mailbox_visits_record(user=user, seen_up_to={support.pk: seen_support.pk, sales.pk: seen_sales.pk})

    view = email_view_for_user(user=user)
    assert [(choice.mailbox, choice.new_count, choice.seen_up_to) for choice in view.choices] == [
        (sales, 1, seen_sales.pk),
        (support, 0, seen_support.pk),
    ]
    rows = email_grid_rows(emails=[seen_support, unseen_sales, seen_sales], view=view)
    assert [(row.email, row.is_new) for row in rows] == [
        (seen_support, False),
        (unseen_sales, True),
        (seen_sales, False),
    ]
