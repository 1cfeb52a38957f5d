"""Findings of the hostile review of the hardening (issue 10): one test per defect, fixed."""

from __future__ import annotations

import pytest
from django.urls import reverse

from autoresponse.loops import LoopCheckInput, suppression_reason
from tests.mailboxes.test_admin_scoping import _side, _staff

pytestmark = pytest.mark.django_db


# --- admin: the raw-id widget of Case.previous_case reads its label unscoped ------------------


def test_raw_id_widget_does_not_show_another_mailboxs_case(client):
    granted, other = _side("Granted"), _side("Other")
    user = _staff(actions=("view", "change", "add", "delete"))
    granted.mailbox.authorized_users.add(user)
    client.force_login(user)
    foreign = other.rows["case"]
    page = client.get(reverse("admin:processing_case_add") + f"?previous_case={foreign.pk}")
    assert page.status_code == 200
    assert "Other case" not in page.content.decode()


# --- auto-responses: an own mailbox spelled another way is answered ---------------------------


@pytest.mark.parametrize(
    "answered",
    ["support+loop@example.com", "support@xn--bcher-kva.example"],
)
def test_reply_to_one_of_our_own_mailboxes_in_another_spelling_is_suppressed(answered):
    check = LoopCheckInput(
        headers=[("From", "x"), ("Reply-To", answered)],
        sender_address="attacker@evil.example",
        own_addresses=frozenset({"support@example.com", "support@bücher.example"}),
        answered=answered,
    )
    assert suppression_reason(check) is not None


# --- storing + auto-responses: the reduced form drops the headers the loop check needs --------


def test_an_email_stored_in_reduced_form_is_not_auto_answered_blind(monkeypatch):
    from django.db import transaction

    from autoresponse.models import AutoReply, AutoReplyStatus
    from autoresponse.services import auto_replies_plan_for_email
    from mailboxes.services import storing
    from tests.factories import AutoResponseRuleFactory, MailboxFactory

    mailbox = MailboxFactory(email="support@example.com")
    AutoResponseRuleFactory(mailbox=mailbox)
    raw = (
        b"From: Vacation Bot <jane@customer.example>\r\nTo: support@example.com\r\n"
        b"Subject: Out of office\r\nMessage-ID: <ooo@customer.example>\r\n"
        b"Date: Tue, 1 Dec 2026 09:00:00 +0000\r\nAuto-Submitted: auto-replied\r\n"
        b"Precedence: bulk\r\n\r\nI am away.\r\n"
    )

    def refused(*args, **kwargs):  # whatever value no bound foresaw, refused by the database
        raise ValueError("a value no bound foresaw")

    monkeypatch.setattr(storing, "_attachments_store", refused)
    with transaction.atomic():
        email = storing.email_store_fetched(
            mailbox=mailbox, uidvalidity=1, uid=1, raw=raw, internal_date=None, is_history=False
        ).email
    assert "reduced form" in email.parse_problem
    auto_replies_plan_for_email(email=email, joined_existing=False)
    assert list(AutoReply.objects.values_list("status", flat=True)) != [AutoReplyStatus.PENDING]
