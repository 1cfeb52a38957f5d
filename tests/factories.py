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
