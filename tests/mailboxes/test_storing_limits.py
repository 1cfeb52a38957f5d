"""Storing bounds every value to what SQLite and PostgreSQL can store, index and read back.

Each test is one family of hostile values from mailboxes/limits.py, stored through the real
storing service; the suite runs on both databases (make test-postgres). Reading the row back
(refresh_from_db) is part of every check: PostgreSQL stores some values Python can't read.
"""

from datetime import UTC, datetime

import pytest
from django.db import DataError, transaction

from mailboxes import limits
from mailboxes.models import Attachment, Email
from mailboxes.services.storing import email_store_fetched
from processing.services import email_process
from tests.factories import MailboxFactory
from tests.hostile import encoded_words

pytestmark = pytest.mark.django_db


def message(*, headers: str = "", body: str = "Hello.\r\n", content_type: str = "text/plain") -> bytes:
    head = headers if "From:" in headers else "From: Alice <alice@example.com>\r\n" + headers
    return (
        f"{head}To: support@example.com\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n{body}"
    ).encode("utf-8", "surrogateescape")


def store(raw: bytes, *, uid: int = 1, mailbox=None, internal_date=None) -> Email:
    mailbox = mailbox or MailboxFactory()
    with transaction.atomic():
        outcome = email_store_fetched(
            mailbox=mailbox, uidvalidity=1, uid=uid, raw=raw, internal_date=internal_date, is_history=False
        )
    assert outcome.email is not None
    email = Email.objects.get(pk=outcome.email.pk)  # read back: what every page will do
    assert email.raw.read() == raw
    return email


@pytest.mark.parametrize(
    "date",
    [
        "Fri, 31 Dec 9999 23:59:59 -1400",  # year 10000 in UTC
        "Wed, 1 Jan 1000 00:00:00 +1400",
        "Mon, 1 Jan 1800 00:00:00 +0000",
        "Tue, 1 Jan 2200 00:00:00 +0000",
        "Fri, 31 Dec 9999 23:59:59 +0000",
    ],
)
def test_a_date_outside_the_sane_range_is_stored_as_null_with_a_problem(date):
    email = store(message(headers=f"Date: {date}\r\nSubject: dated\r\n"))
    assert email.date is None
    assert "out of range" in email.parse_problem
    assert email.subject == "dated"


@pytest.mark.parametrize(
    "date",
    ["Mon, 1 Jan 1900 00:00:00 +0000", "Sun, 31 Dec 2199 23:59:59 +0000", "Wed, 2 Dec 2026 09:00 +1400"],
)
def test_a_date_inside_the_range_is_kept(date):
    email = store(message(headers=f"Date: {date}\r\n"))
    assert email.date is not None
    assert "out of range" not in email.parse_problem


@pytest.mark.parametrize("year", [1, 1899, 2200, 9999])
def test_an_internaldate_outside_the_range_is_replaced_by_the_time_of_storing(year):
    before = datetime.now(UTC)
    email = store(message(), internal_date=datetime(year, 6, 1, tzinfo=UTC))
    assert email.received_at >= before.replace(microsecond=0)
    assert "INTERNALDATE" in email.parse_problem


@pytest.mark.parametrize("header", ["Message-ID", "In-Reply-To"])
def test_an_indexed_id_is_cut_to_bytes_not_characters(header):
    cjk = "漢" * 900  # 2,700 bytes of UTF-8: over PostgreSQL's B-tree row limit
    email = store(message(headers=f"{header}: <{encoded_words(cjk)}@example.com>\r\n"))
    value = email.message_id if header == "Message-ID" else email.in_reply_to
    assert value.startswith("<漢")
    assert len(value.encode()) <= limits.MAX_INDEXED_BYTES
    assert "cut" in email.parse_problem


def test_a_megabyte_subject_of_distinct_words_is_cut_and_searchable():
    words = " ".join(f"w{n:06d}" for n in range(150_000))  # ~1.2 MB: over the tsvector limit
    email = store(message(headers=f"Subject: {words}\r\n"))
    assert len(email.subject) == limits.MAX_SUBJECT_CHARS
    assert email.subject.startswith("w000000 w000001")
    assert "subject cut" in email.parse_problem


def test_nul_characters_are_dropped_from_every_text_and_json_value():
    email = store(
        message(
            headers='Subject: a\x00b\r\nX-Thing: c\x00d\r\nReply-To: "n\x00m" <r@example.com>\r\n',
            body="body\x00text\r\n",
        )
    )
    assert email.subject == "ab"
    assert ["X-Thing", "cd"] in email.headers
    assert "\x00" not in email.text_body
    assert "\x00" not in str(email.reply_to)


@pytest.mark.parametrize("local_length", [256, 300, 2000])
def test_a_long_local_part_fits_every_column_down_to_the_lead_name(local_length):
    address = "x" * local_length + "@example.com"
    mailbox = MailboxFactory(processing_action="lead")
    email = store(message(headers=f"From: {address}\r\nSubject: long\r\n"), mailbox=mailbox)
    assert len(email.from_address) <= 320
    outcome = email_process(email_id=email.pk)
    assert outcome.result == "lead_created", outcome.error
    email.refresh_from_db()
    assert len(email.lead.name) <= 255
    assert len(email.lead.email) <= 320


def test_a_long_display_name_and_case_reporter_fit_their_columns():
    mailbox = MailboxFactory(processing_action="case")
    name = "N" * 5000
    email = store(message(headers=f'From: "{name}" <a@example.com>\r\nSubject: s\r\n'), mailbox=mailbox)
    assert len(email.from_name) == 255
    outcome = email_process(email_id=email.pk)
    assert outcome.result == "case_created", outcome.error
    assert len(email.__class__.objects.get(pk=email.pk).case.reporter_name) <= 255


def test_many_tiny_parts_create_at_most_the_attachment_cap():
    boundary = "b"
    parts = "".join(
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="f{n}.bin"\r\n\r\nx\r\n'
        for n in range(3_000)
    )
    raw = message(
        content_type=f'multipart/mixed; boundary="{boundary}"',
        body=f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nhello\r\n{parts}--{boundary}--\r\n",
    )
    email = store(raw)
    assert email.attachments.count() == limits.MAX_ATTACHMENTS
    assert "MIME parts" in email.parse_problem
    assert email.text_body.strip() == "hello"


def test_many_header_fields_keep_the_first_ones_and_say_so():
    headers = "".join(f"X-Pad-{n}: {n}\r\n" for n in range(limits.MAX_HEADERS + 300))
    email = store(message(headers=headers + "Subject: after the padding\r\n"))
    assert len(email.headers) == limits.MAX_HEADERS
    assert "header fields beyond the first" in email.parse_problem
    # Fields the product reads are found wherever they stand.
    assert email.subject == "after the padding"


def test_a_huge_header_value_is_cut_in_the_stored_headers():
    email = store(message(headers="X-Huge: " + "y" * 100_000 + "\r\n"))
    value = dict((name, value) for name, value in email.headers)["X-Huge"]
    assert len(value) == limits.MAX_HEADER_VALUE_CHARS


def test_many_recipients_are_capped():
    to = ", ".join(f"r{n}@example.com" for n in range(limits.MAX_ADDRESSES + 10))
    email = store(message(headers=f"Cc: {to}\r\n"))
    assert len(email.cc) == limits.MAX_ADDRESSES
    assert "cc: only the first" in email.parse_problem


def test_a_value_the_database_refuses_gives_a_reduced_email_not_a_failed_batch(monkeypatch):
    """A bound nobody foresaw: the full form fails inside its savepoint, the reduced one is kept."""
    mailbox = MailboxFactory()

    def refuse(*args, **kwargs):
        raise DataError("value too long for type character varying(255)")

    monkeypatch.setattr(Attachment.objects, "bulk_create", refuse)
    raw = message(
        headers="Subject: with a file\r\nMessage-ID: <reduced@example.com>\r\n",
        content_type='multipart/mixed; boundary="z"',
        body="--z\r\nContent-Type: text/plain\r\n\r\nhi\r\n--z\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n%PDF\r\n--z--\r\n',
    )
    with transaction.atomic():
        good_before = email_store_fetched(
            mailbox=mailbox,
            uidvalidity=1,
            uid=1,
            raw=message(headers="Subject: plain\r\n"),
            internal_date=None,
            is_history=False,
        )
        reduced = email_store_fetched(
            mailbox=mailbox, uidvalidity=1, uid=2, raw=raw, internal_date=None, is_history=False
        )
    email = Email.objects.get(pk=reduced.email.pk)
    assert email.parse_problem.startswith("stored in reduced form (DataError")
    assert (email.subject, email.message_id, email.from_address) == (
        "with a file",
        "<reduced@example.com>",
        "alice@example.com",
    )
    assert email.text_body == ""
    assert email.attachments.count() == 0
    assert email.raw.read() == raw
    assert Email.objects.filter(pk=good_before.email.pk).exists()


def test_the_reduced_form_is_still_recognised_as_a_duplicate(monkeypatch):
    mailbox = MailboxFactory()
    monkeypatch.setattr(
        Attachment.objects, "bulk_create", lambda *a, **k: (_ for _ in ()).throw(ValueError())
    )
    raw = message(headers="Message-ID: <twice@example.com>\r\n")
    with transaction.atomic():
        first = email_store_fetched(
            mailbox=mailbox, uidvalidity=1, uid=1, raw=raw, internal_date=None, is_history=False
        )
        second = email_store_fetched(
            mailbox=mailbox, uidvalidity=2, uid=1, raw=raw, internal_date=None, is_history=False
        )
    assert first.email is not None
    assert (second.email, second.duplicate_of) == (None, first.email.pk)


def test_clean_text_family():
    assert limits.clean_text("a\x00b") == "ab"
    assert limits.clean_text("a\udcffb") == "a?b"
    assert limits.cut_bytes("é" * 10, 5) == "éé"
    assert limits.cut_bytes("abc", 5) == "abc"
    assert limits.bounded_date(datetime(9999, 12, 31, 23, 59, tzinfo=UTC)) is None
