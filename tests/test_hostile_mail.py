"""Hostile mail against the whole product: real Dovecot, the pipeline, the staff pages, the admin.

Each hostile message is one member of a family of mailboxes/limits.py (not the issue's own
examples), appended between good ones. After one poll: every message is an Email row, every good
one is processed into its case, every hostile one carries its problem, the mailbox does not fail,
the cursor stands on the last UID, and every page that shows them answers 200. The suite runs on
SQLite and on PostgreSQL (make test-postgres). Next to the fixed cases, hypothesis generates
hostile headers and MIME structures and stores them through the same service.
"""

from __future__ import annotations

import string

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailboxes import limits
from mailboxes.models import Email, ProcessingStatus
from mailboxes.services.storing import email_store_fetched
from mailhub.pipeline import mailbox_poll_inline
from tests.factories import MailboxFactory, UserFactory
from tests.hostile import encoded_words

pytestmark = [pytest.mark.django_db(transaction=True)]


def build(n: int, *, headers: str = "", body: str = "Please help.\r\n", ctype: str = "text/plain") -> bytes:
    base = {
        "From": f"Customer {n} <customer{n}@example.org>",
        "To": "support@example.com",
        "Subject": f"Request {n}",
        "Message-ID": f"<hostile-{n}@example.org>",
        "Date": "Tue, 1 Dec 2026 09:00:00 +0000",
    }
    overridden = {line.split(":", 1)[0] for line in headers.split("\r\n") if ":" in line}
    head = "".join(f"{name}: {value}\r\n" for name, value in base.items() if name not in overridden)
    text = f"{head}{headers}MIME-Version: 1.0\r\nContent-Type: {ctype}\r\n\r\n{body}"
    return text.encode("utf-8", "surrogateescape")


def _tiny_parts(count: int) -> tuple[str, str]:
    parts = "".join(f"--p\r\nContent-Type: application/x-{n % 7}\r\n\r\n{n}\r\n" for n in range(count))
    return (
        'multipart/mixed; boundary="p"',
        f"--p\r\nContent-Type: text/plain\r\n\r\nsee parts\r\n{parts}--p--\r\n",
    )


# name -> (raw message, words expected in its parse_problem)
def hostile_messages() -> dict[str, tuple[bytes, str]]:
    ctype, body = _tiny_parts(20_000)
    return {
        "far-future date": (build(101, headers="Date: Sat, 31 Dec 9999 22:00:00 -1200\r\n"), "out of range"),
        "ancient date": (build(102, headers="Date: Mon, 14 Oct 1066 09:00:00 +0000\r\n"), "out of range"),
        "hangul message-id": (
            build(103, headers=f"Message-ID: <{encoded_words('한' * 960)}@example.org>\r\n"),
            "message_id cut",
        ),
        "emoji in-reply-to": (
            build(104, headers=f"In-Reply-To: <{encoded_words('📨' * 950)}@example.org>\r\n"),
            "in_reply_to cut",
        ),
        "1.4 MB subject": (
            build(105, headers="Subject: " + " ".join(f"s{k:07d}" for k in range(170_000)) + "\r\n"),
            "subject cut",
        ),
        "400-character local part": (build(106, headers=f"From: {'q' * 400}@example.org\r\n"), "cut"),
        "20,000 tiny parts": (build(107, ctype=ctype, body=body), "MIME parts"),
        "5,000 header fields": (
            build(108, headers="".join(f"X-Junk-{k}: {k}\r\n" for k in range(5_000))),
            "header fields beyond",
        ),
        "3,000 Cc": (
            build(109, headers="Cc: " + ",\r\n ".join(f"c{k}@example.org" for k in range(3_000)) + "\r\n"),
            "only the first",
        ),
    }


@pytest.fixture
def case_mailbox(imap_account):
    return MailboxFactory.on_dovecot(
        imap_account,
        history_import="none",
        processing_action="case",
    )


def test_hostile_mail_never_stops_the_mailbox_and_every_page_answers(case_mailbox, imap_account, client):
    assert mailbox_poll_inline(mailbox_id=case_mailbox.pk).error == ""
    hostile = hostile_messages()
    good_uids, hostile_uids = [], {}
    for n, (name, (raw, _problem)) in enumerate(hostile.items()):
        good_uids.append(imap_account.append(build(n)))
        hostile_uids[name] = imap_account.append(raw)
    good_uids.append(imap_account.append(build(99)))

    result = mailbox_poll_inline(mailbox_id=case_mailbox.pk)

    assert result.error == ""
    case_mailbox.refresh_from_db()
    assert (case_mailbox.last_error, case_mailbox.consecutive_failures) == ("", 0)
    assert case_mailbox.imap_last_uid == max(good_uids)
    assert Email.objects.filter(mailbox=case_mailbox).count() == len(good_uids) + len(hostile)
    for uid in good_uids:
        email = Email.objects.get(mailbox=case_mailbox, uid=uid)
        assert (email.processing_status, email.parse_problem) == (ProcessingStatus.DONE, "")
        assert email.case_id is not None
    for name, uid in hostile_uids.items():
        email = Email.objects.get(mailbox=case_mailbox, uid=uid)
        assert hostile[name][1] in email.parse_problem, name
        assert email.processing_status == ProcessingStatus.DONE, (name, email.processing_error)
        assert email.case_id is not None, name

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert client.get("/emails/").status_code == 200
    assert client.get("/emails/", {"q": "request"}).status_code == 200
    assert client.get("/cases/").status_code == 200
    assert client.get("/admin/mailboxes/email/").status_code == 200
    for email in Email.objects.filter(mailbox=case_mailbox):
        assert client.get(f"/emails/{email.pk}/").status_code == 200, email.uid
        assert client.get(f"/admin/mailboxes/email/{email.pk}/change/").status_code == 200, email.uid
        assert client.get(f"/cases/{email.case_id}/").status_code == 200, email.uid


# -- property-based: hostile headers and MIME structure -------------------------------------------

_HEADER_NAMES = st.sampled_from(
    [
        "Subject",
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Date",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Disposition",
        "Content-Transfer-Encoding",
        "X-Anything",
    ]
)
_NASTY_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=500, max_size=5000),
    st.builds(
        lambda s, n: s * n,
        st.sampled_from(["=?utf-8?b?5ryi?=", "漢", "\x00", "a=b; ", "<x@y>", ", "]),
        st.integers(1, 3000),
    ),
    st.sampled_from(
        [
            "Fri, 31 Dec 9999 23:59:59 -1400",
            "Mon, 1 Jan 0000 00:00:00 +9999",
            "=?x?q?",
            "<>",
            "multipart/mixed",
            'multipart/mixed; boundary=""',
            "base64",
            "\udcff\udcfe",
        ]
    ),
)
_HEADER = st.tuples(_HEADER_NAMES, _NASTY_TEXT)


@st.composite
def mime_trees(draw, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        cte = draw(st.sampled_from(["7bit", "base64", "quoted-printable", "x-junk"]))
        ctype = draw(
            st.sampled_from(["text/plain", "text/html", "image/png", "message/rfc822", "application/pdf"])
        )
        body = draw(st.text(alphabet=string.printable, max_size=200))
        return f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n"
    boundary = draw(st.sampled_from(["b", "bb", "x y", "-"]))
    children = draw(st.lists(mime_trees(depth + 1), min_size=0, max_size=4))
    inner = "".join(f"--{boundary}\r\n{child}" for child in children)
    return f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n{inner}--{boundary}--\r\n'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(_HEADER, max_size=12), tree=mime_trees())
def test_any_hostile_header_or_structure_becomes_a_readable_email(headers, tree):
    mailbox = MailboxFactory()
    head = "".join(
        f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}\r\n" for name, value in headers
    )
    raw = (head + "MIME-Version: 1.0\r\n" + tree).encode("utf-8", "surrogateescape")
    with transaction.atomic():
        outcome = email_store_fetched(
            mailbox=mailbox, uidvalidity=1, uid=1, raw=raw, internal_date=None, is_history=False
        )
    email = Email.objects.get(pk=outcome.email.pk)
    assert email.raw.read() == raw
    assert len(email.message_id.encode()) <= limits.MAX_INDEXED_BYTES
    assert len(email.subject) <= limits.MAX_SUBJECT_CHARS
    assert email.attachments.count() <= limits.MAX_ATTACHMENTS
    assert email.date is None or limits.EARLIEST_DATE <= email.date < limits.LATEST_DATE
    mailbox.delete()
