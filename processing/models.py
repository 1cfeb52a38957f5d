"""Leads and cases created from (or joined by) emails."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone


class LeadStatus(models.TextChoices):
    NEW = "new", "New"
    CONTACTED = "contacted", "Contacted"
    QUALIFIED = "qualified", "Qualified"
    WON = "won", "Won"
    LOST = "lost", "Lost"


OPEN_LEAD_STATUSES = (LeadStatus.NEW, LeadStatus.CONTACTED, LeadStatus.QUALIFIED)


class Lead(models.Model):
    name = models.CharField(max_length=255)
    email = models.CharField(max_length=320, db_index=True)
    subject = models.TextField(blank=True)
    notes = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=LeadStatus.choices, default=LeadStatus.NEW)
    mailbox = models.ForeignKey(
        "mailboxes.Mailbox", on_delete=models.PROTECT, related_name="leads", help_text="Source."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="leads"
    )
    # One-to-one: the database itself refuses a second lead from the same email.
    source_email = models.OneToOneField(
        "mailboxes.Email",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_lead",
        help_text="The email this lead was created from.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    def get_absolute_url(self) -> str:
        return reverse("leads:detail", args=[self.pk])


class CaseStatus(models.TextChoices):
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    # Answered, the next move is the customer's: their next email opens the case again.
    WAITING = "waiting", "Waiting for customer"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


class CasePriority(models.TextChoices):
    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


# Case numbers start here so that the first case reads like a real ticket (#1001), not #1.
FIRST_CASE_NUMBER = 1001


class Case(models.Model):
    # Given by processing.services.cases.case_number_allocate; unique, so two creators can never
    # share one.
    number = models.PositiveIntegerField(unique=True, editable=False)
    subject = models.TextField(blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=CaseStatus.choices, default=CaseStatus.OPEN)
    priority = models.CharField(max_length=20, choices=CasePriority.choices, default=CasePriority.NORMAL)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_cases"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_cases",
    )
    reporter_name = models.CharField(max_length=255, blank=True)
    reporter_address = models.CharField(max_length=320, blank=True, db_index=True)
    mailbox = models.ForeignKey("mailboxes.Mailbox", on_delete=models.PROTECT, related_name="cases")
    previous_case = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="follow_up_cases",
        help_text="The closed case this one follows up.",
    )
    # One-to-one: the database itself refuses a second case from the same email.
    source_email = models.OneToOneField(
        "mailboxes.Email",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_case",
        help_text="The email this case was created from.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(
        null=True, blank=True, help_text="When staff's first answer was accepted by the SMTP server."
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.reference} {self.subject}"

    def get_absolute_url(self) -> str:
        return reverse("cases:detail", args=[self.pk])

    @property
    def reference(self) -> str:
        return f"#{self.number}"

    @property
    def first_response_after(self) -> timedelta | None:
        """How long the customer waited for staff's first answer (None: not answered yet)."""
        if self.first_response_at is None:
            return None
        return max(self.first_response_at - self.created_at, timedelta(0))


# The CaseEvent field of staff's first answer; its new value is when the SMTP server accepted it.
FIRST_RESPONSE_FIELD = "first_response"
# Who a CaseEvent without a user and without a username was made by: mailhub itself (a case
# reopened by the customer's email). A person always has a username, even once deleted.
SYSTEM_ACTOR = "mailhub"


class CaseEvent(models.Model):
    """Audit trail of a case: who changed which field, from what to what, and when.

    Values are stored as text (choice codes for status and priority, the username for the
    assignee) so the trail still reads correctly after users are renamed or deleted; `username`
    keeps who did it when the user row is gone. A change made by mailhub itself has neither
    (see `actor`).
    """

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    field = models.CharField(max_length=30)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # Newest change first; the fields of one change in the order they were recorded.
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["case", "-created_at", "id"], name="case_event_case_created")]

    def __str__(self) -> str:
        return (
            f"{self.case.reference} {self.field}: {self.old_value!r} -> {self.new_value!r} by {self.username}"
        )

    @property
    def actor(self) -> str:
        return self.username or SYSTEM_ACTOR

    @property
    def is_first_response(self) -> bool:
        return self.field == FIRST_RESPONSE_FIELD

    @property
    def old_display(self) -> str:
        return self._display(self.old_value)

    @property
    def new_display(self) -> str:
        return self._display(self.new_value)

    def _display(self, value: str) -> str:
        labels = {"status": CaseStatus, "priority": CasePriority}.get(self.field)
        if labels is not None and value in labels.values:
            return str(labels(value).label)
        return value or "nobody"


class Note(models.Model):
    """An internal note of staff on a case, or on an email that has no case: never emailed.

    On an email that later joins a case, the note shows in that case's timeline too.
    """

    case = models.ForeignKey(Case, null=True, blank=True, on_delete=models.CASCADE, related_name="notes")
    email = models.ForeignKey(
        "mailboxes.Email", null=True, blank=True, on_delete=models.CASCADE, related_name="notes"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_name = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(case__isnull=False) | models.Q(email__isnull=False),
                name="note_on_case_or_email",
            ),
        ]
        indexes = [
            models.Index(fields=["case", "created_at"], name="note_case_created"),
            models.Index(fields=["email", "created_at"], name="note_email_created"),
        ]

    def __str__(self) -> str:
        return f"note {self.pk} by {self.author_name}"


class AgentSignature(models.Model):
    """An agent's own signature, for one mailbox or (mailbox empty) for all of them: it replaces
    the mailbox's signature in the agent's answers."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="signatures")
    mailbox = models.ForeignKey(
        "mailboxes.Mailbox", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    text = models.TextField(help_text="Plain text.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "mailbox"], name="agent_signature_unique_user_mailbox"),
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(mailbox__isnull=True), name="agent_signature_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"signature of {self.user_id} for {self.mailbox_id or 'all mailboxes'}"
