"""The full-text index behind the grid's search, on the database the suite runs on (SQLite by
default; PostgreSQL with DATABASE_URL, as `make test-postgres` does)."""

from __future__ import annotations

import pytest
from django.db import connection

from mailboxes.models import Email
from mailhub.web.emails.access import emails_visible_to
from mailhub.web.emails.grid import EmailGridQuery, email_search_condition, emails_filtered, search_terms
from tests.factories import EmailFactory, MailboxFactory, UserFactory

pytestmark = pytest.mark.django_db


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A test table is tiny: leave the planner nothing but bitmap scans, which only the
            # GIN index can offer for this condition, so the plan shows whether the index *can*
            # answer the query's expression (it cannot if the two expressions differ at all).
            for access_path in ("seqscan", "indexscan", "indexonlyscan"):
                cursor.execute(f"SET LOCAL enable_{access_path} = off")
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(row[3] for row in cursor.fetchall())


def test_search_is_answered_by_the_full_text_index():
    user = UserFactory(is_superuser=True)
    mailbox = MailboxFactory()
    EmailFactory(mailbox=mailbox, subject="Invoice overdue")
    EmailFactory(mailbox=mailbox, subject="Receipt")
    emails = emails_filtered(emails_visible_to(user), EmailGridQuery(search="invoice"))
    assert list(emails.values_list("subject", flat=True)) == ["Invoice overdue"]
    condition = email_search_condition(["invoice"], vendor=connection.vendor)
    plan = _plan(Email.objects.filter(condition).values("pk"))
    if connection.vendor == "postgresql":
        assert "Bitmap Index Scan on mailboxes_email_search" in plan, plan
    else:
        assert "SCAN mailboxes_email_fts VIRTUAL TABLE INDEX" in plan, plan


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite FTS5 triggers")
def test_sqlite_triggers_keep_the_index_in_sync():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'mailboxes_email'"
        )
        triggers = sorted(row[0] for row in cursor.fetchall())
    # A migration that rebuilds the email table (SQLite's _remake_table) drops these: it must
    # create them again, see mailboxes/migrations/0003_staff_pages.py.
    assert triggers == [
        "mailboxes_email_fts_delete",
        "mailboxes_email_fts_insert",
        "mailboxes_email_fts_update",
    ]
    email = EmailFactory(subject="first words", text_body="alpha")
    email.text_body = "omega"
    email.save()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO mailboxes_email_fts(mailboxes_email_fts, rank) VALUES ('integrity-check', 1)"
        )
        cursor.execute("SELECT rowid FROM mailboxes_email_fts WHERE mailboxes_email_fts MATCH 'omega'")
        assert cursor.fetchall() == [(email.pk,)]
        cursor.execute("SELECT rowid FROM mailboxes_email_fts WHERE mailboxes_email_fts MATCH 'alpha'")
        assert cursor.fetchall() == []


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("Invoice  2026-114", ["invoice", "2026", "114"]),
        ('"a" OR b* NEAR(c) -d !e :f', ["a", "or", "b", "near", "c", "d", "e", "f"]),
        ("zoe.quill@acme.example", ["zoe", "quill", "acme", "example"]),
        ("Grüße_ÉTÉ", ["grüße", "été"]),
        (
            "one two three four five six seven eight nine ten",
            ["one", "two", "three", "four", "five", "six", "seven", "eight"],
        ),
        ("   ", []),
    ],
)
def test_search_terms(text, terms):
    assert search_terms(text) == terms
