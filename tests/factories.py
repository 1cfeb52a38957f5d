"""factory_boy factories of the domain models."""

import hashlib
from typing import TYPE_CHECKING, Any

import factory
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile

from autoresponse.models import AutoReply, AutoResponseRule, EmailTemplate, RuleCondition
from mailboxes.models import Attachment, Email, Mailbox
from processing.models import Case, Lead
from processing.services.cases import case_number_allocate

if TYPE_CHECKING:
    from tests.servers import ImapAccount


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(*extracted)
        if create:
            self.save()


class GroupFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Group

    name = factory.Sequence(lambda n: f"role{n}")


class MailboxFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Mailbox

    label = factory.Sequence(lambda n: f"Mailbox {n}")
    email = factory.Sequence(lambda n: f"box{n}@example.com")
    imap_host = "127.0.0.1"
    imap_port = 143
    imap_security = "none"
    imap_username = factory.Sequence(lambda n: f"box{n}")
    imap_password = "secret"
    smtp_host = "127.0.0.1"
    smtp_port = 25
    smtp_security = "none"

    @classmethod
    def on_dovecot(cls, account: "ImapAccount", **overrides: Any) -> Mailbox:
        """A mailbox that logs in to `account` on a test Dovecot over plain IMAP on loopback.

        `overrides` are fields as for MailboxFactory(...) and win over the account's values
        (another port and imap_security for the TLS listener, a wrong imap_password, ...).
        """
        fields: dict[str, Any] = {
            "imap_host": account.host,
            "imap_port": account.port,
            "imap_security": "none",
            "imap_username": account.username,
            "imap_password": account.password,
        }
        return cls(**(fields | overrides))


def _raw_message(email: "Email") -> ContentFile:
    return ContentFile(f"Subject: {email.subject}\r\n\r\nbody\r\n".encode(), name="message.eml")


class EmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Email

    mailbox = factory.SubFactory(MailboxFactory)
    uidvalidity = 1
    uid = factory.Sequence(lambda n: n + 1)
    message_id = factory.Sequence(lambda n: f"<msg{n}@example.com>")
    subject = factory.Sequence(lambda n: f"Subject {n}")
    from_name = "Alice Example"
    from_address = "alice@example.com"
    text_body = "Hello"
    raw = factory.LazyAttribute(_raw_message)
    size = 30
    content_sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    identity = factory.Sequence(lambda n: hashlib.sha256(f"identity{n}".encode()).hexdigest())


class AttachmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Attachment

    email = factory.SubFactory(EmailFactory)
    filename = "report.pdf"
    content_type = "application/pdf"
    size = 4
    file = factory.LazyFunction(lambda: ContentFile(b"%PDF", name="report.pdf"))


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    name = "Alice Example"
    email = "alice@example.com"
    mailbox = factory.SubFactory(MailboxFactory)


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Case

    subject = factory.Sequence(lambda n: f"Case {n}")
    reporter_address = "alice@example.com"
    mailbox = factory.SubFactory(MailboxFactory)

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # Numbers come from the service, as in the application; an explicit number is kept.
        case = model_class(*args, **kwargs)
        if case.number is None:
            return case_number_allocate(case=case)
        case.save()
        return case


class EmailTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailTemplate

    name = factory.Sequence(lambda n: f"template {n}")
    subject = "Re: {{ email.subject }}"
    text_body = "Thanks, we got your message."


class AutoResponseRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AutoResponseRule

    mailbox = factory.SubFactory(MailboxFactory)
    name = factory.Sequence(lambda n: f"rule {n}")
    template = factory.SubFactory(EmailTemplateFactory)


class RuleConditionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RuleCondition

    rule = factory.SubFactory(AutoResponseRuleFactory)
    field = "subject"
    operator = "contains"
    value = "help"


class AutoReplyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AutoReply

    email = factory.SubFactory(EmailFactory)
    rule = factory.SubFactory(AutoResponseRuleFactory)
    rule_name = factory.LazyAttribute(lambda reply: reply.rule.name)
    status = "suppressed"
    reason = "Precedence: bulk"


# Kept here with the factory (the file's top is shared with the other parts of issue 12).
from email.message import EmailMessage  # noqa: E402
from email.utils import format_datetime, make_msgid  # noqa: E402
from uuid import uuid4  # noqa: E402

from django.utils import timezone  # noqa: E402

from mailboxes.models import OutboundMessage  # noqa: E402
from mailboxes.services.storing import email_store_outgoing  # noqa: E402


def outbound_message(
    *,
    mailbox: Mailbox,
    to: tuple[str, ...] = ("ann@customer.example",),
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    subject: str = "Re: Your order",
    body: str = "Thanks, it ships tomorrow.\n",
    sent_by: User | None = None,
    **fields: Any,
) -> OutboundMessage:
    """An answer of staff as the answer service makes one: an outgoing Email stored from the exact
    bytes (built with email.message.EmailMessage; Bcc only in the envelope) and its
    OutboundMessage. `fields` are OutboundMessage fields (status, sent_copy_status, ...)."""
    message = EmailMessage()
    message["From"] = f"{mailbox.label} <{mailbox.email}>"
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(idstring=uuid4().hex, domain=mailbox.email.rpartition("@")[2])
    message.set_content(body)
    raw = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    email = email_store_outgoing(mailbox=mailbox, raw=raw, sent_by_id=sent_by.pk if sent_by else None)
    values: dict[str, Any] = {
        "submission_key": uuid4().hex,
        "sent_by": sent_by,
        "envelope_recipients": [*to, *cc, *bcc],
        "bcc": [["", address] for address in bcc],
    }
    return OutboundMessage.objects.create(email=email, **(values | fields))
