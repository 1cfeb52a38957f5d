"""Auto-response rules (conditions on an email) and the Jinja2 templates they answer with."""

from __future__ import annotations

from django.db import models

from .conditions import ConditionField, ConditionOperator, MatchMode


def _choices(kind: type[ConditionField | ConditionOperator | MatchMode]) -> list[tuple[str, str]]:
    # The pure module defines the values and their labels once; the columns only list them.
    return [(member.value, member.label) for member in kind]


class EmailTemplate(models.Model):
    name = models.CharField(max_length=100, unique=True)
    subject = models.CharField(max_length=998, help_text="Jinja2, e.g. 'Re: {{ email.subject }}'.")
    text_body = models.TextField(help_text="Jinja2 plain-text body.")
    html_body = models.TextField(blank=True, help_text="Optional Jinja2 HTML body (autoescaped).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AutoResponseRule(models.Model):
    mailbox = models.ForeignKey(
        "mailboxes.Mailbox", on_delete=models.CASCADE, related_name="auto_response_rules"
    )
    name = models.CharField(max_length=100)
    is_active = models.BooleanField(default=True)
    order = models.PositiveIntegerField(default=0, help_text="Rules are tried in ascending order.")
    match = models.CharField(max_length=3, choices=_choices(MatchMode), default=MatchMode.ALL.value)
    template = models.ForeignKey(EmailTemplate, on_delete=models.PROTECT, related_name="rules")
    stop_after_match = models.BooleanField(
        "stop after this rule", default=True, help_text="When this rule matches, try no later rule."
    )
    answer_replies = models.BooleanField(
        default=False, help_text="Also answer emails that joined an existing case or lead."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["mailbox", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "name"], name="autoresponse_rule_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox.label}: {self.name}"


class RuleCondition(models.Model):
    rule = models.ForeignKey(AutoResponseRule, on_delete=models.CASCADE, related_name="conditions")
    field = models.CharField(max_length=20, choices=_choices(ConditionField))
    header_name = models.CharField(max_length=100, blank=True, help_text="Only for the 'Header' field.")
    operator = models.CharField(max_length=20, choices=_choices(ConditionOperator))
    value = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["rule", "id"]

    def __str__(self) -> str:
        field = self.header_name if self.field == ConditionField.HEADER else self.get_field_display()
        return f"{field} {self.get_operator_display()} {self.value!r}"


class AutoReplyStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    SUPPRESSED = "suppressed", "Suppressed"
    FAILED = "failed", "Failed"
    # The connection died after the whole message was sent, before the server's answer (or the
    # worker died mid-send): it may have been delivered. Never retried automatically; an admin
    # resends it by hand after checking it did not arrive.
    UNCERTAIN = "uncertain", "Unknown outcome (resend by hand)"


class AutoReply(models.Model):
    """One decision per (email, rule): sent once, or suppressed/failed with its reason."""

    email = models.ForeignKey("mailboxes.Email", on_delete=models.CASCADE, related_name="auto_replies")
    rule = models.ForeignKey(AutoResponseRule, null=True, on_delete=models.SET_NULL, related_name="replies")
    rule_name = models.CharField(max_length=100, help_text="Kept when the rule is deleted.")
    status = models.CharField(max_length=12, choices=AutoReplyStatus.choices, db_index=True)
    reason = models.TextField(blank=True, help_text="Why it was suppressed, or the last error.")
    recipient = models.CharField(max_length=320, blank=True, help_text="The address answered, as written.")
    # loops.address_key(recipient): the spellings of one inbox folded together; the rate limit is
    # one indexed query on it.
    recipient_key = models.CharField(max_length=320, blank=True, editable=False)
    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    subject = models.TextField(blank=True)
    rendered_message = models.TextField(blank=True, help_text="The whole message as sent (RFC 5322).")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["email", "rule"], name="autoreply_unique_email_rule"),
        ]
        indexes = [
            # The per-address rate limit and the per-mailbox hourly cap look at recent rows only.
            models.Index(fields=["recipient_key", "created_at"], name="autoreply_key_created"),
            models.Index(fields=["created_at"], name="autoreply_created"),
        ]
        verbose_name_plural = "auto-replies"

    def __str__(self) -> str:
        return f"{self.rule_name} -> {self.recipient or '?'}: {self.status}"
