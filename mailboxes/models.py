"""Mailboxes, the emails fetched from them, and their attachments."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from .access import AnyUser, Reach, mailbox_reach, mailboxes_granted_q
from .encryption import EncryptedTextField, SecretDecryptionError
from .imap import ImapSettings
from .oauth_models import AuthMethod
from .oauth_models import OAuthGrant as OAuthGrant  # registered with the app here
from .smtp import SmtpSettings
from .tls import Security

# The reason recorded on a mailbox (and shown in the admin and `mailhub_status`) when its secret
# was encrypted with a key that MAILHUB_ENCRYPTION_KEYS no longer lists.
IMAP_KEY_MISSING_ERROR = (
    "IMAP password can't be decrypted with MAILHUB_ENCRYPTION_KEYS: enter it again in the admin"
)
SMTP_KEY_MISSING_ERROR = (
    "SMTP password can't be decrypted with MAILHUB_ENCRYPTION_KEYS: enter it again in the admin"
)


class TransportSecurity(models.TextChoices):
    """The gateways' `Security`, as choices of a mailbox field."""

    SSL = Security.SSL.value, "SSL/TLS (implicit)"
    STARTTLS = Security.STARTTLS.value, "STARTTLS"
    NONE = Security.NONE.value, "None (plain text; loopback or trusted network only)"


class ProcessingAction(models.TextChoices):
    NONE = "none", "Nothing (just keep the email)"
    LEAD = "lead", "Convert to lead"
    CASE = "case", "Convert to case"


class HistoryImport(models.TextChoices):
    ALL = "all", "Import all existing messages"
    NONE = "none", "Skip existing messages"
    SINCE = "since", "Import existing messages since a date"


class EmailDirection(models.TextChoices):
    INCOMING = "incoming", "Received"
    # Written by staff in mailhub and sent as the mailbox (an answer or a forward): never
    # processed nor auto-answered, and not stored again when the poll meets a copy of it.
    OUTGOING = "outgoing", "Sent by staff"


class ProcessingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed (will retry)"
    SKIPPED = "skipped", "Not processed (history)"


class MailboxQuerySet(models.QuerySet["Mailbox"]):
    def accessible_to(self, user: AnyUser | None) -> MailboxQuerySet:
        """The mailboxes `user` may see (the rule is in mailboxes/access.py); every page and
        selector goes through it."""
        reach = mailbox_reach(user)
        if reach is Reach.NOTHING or user is None:
            return self.none()
        if reach is Reach.EVERYTHING:
            return self.all()
        # A subquery rather than .distinct() keeps the queryset usable with ordering and updates.
        return self.filter(pk__in=Mailbox.objects.filter(mailboxes_granted_q(user)).values("pk"))

    def active(self) -> MailboxQuerySet:
        return self.filter(is_active=True)


class Mailbox(models.Model):
    label = models.CharField(max_length=100, unique=True, help_text="Shown to staff, e.g. 'Support'.")
    email = models.EmailField(help_text="The mailbox's own address; auto-responses are sent from it.")

    imap_host = models.CharField("IMAP host", max_length=255)
    imap_port = models.PositiveIntegerField("IMAP port", default=993)
    imap_security = models.CharField(
        "IMAP security", max_length=10, choices=TransportSecurity.choices, default=TransportSecurity.SSL
    )
    imap_username = models.CharField("IMAP username", max_length=255)
    imap_auth = models.CharField(
        "IMAP authentication", max_length=10, choices=AuthMethod.choices, default=AuthMethod.PASSWORD
    )
    imap_password = EncryptedTextField("IMAP password", blank=True, default="")
    imap_folder = models.CharField("IMAP folder", max_length=255, default="INBOX")

    smtp_host = models.CharField("SMTP host", max_length=255, blank=True)
    smtp_port = models.PositiveIntegerField("SMTP port", default=465)
    smtp_security = models.CharField(
        "SMTP security", max_length=10, choices=TransportSecurity.choices, default=TransportSecurity.SSL
    )
    smtp_username = models.CharField("SMTP username", max_length=255, blank=True)
    smtp_auth = models.CharField(
        "SMTP authentication", max_length=10, choices=AuthMethod.choices, default=AuthMethod.PASSWORD
    )
    smtp_password = EncryptedTextField("SMTP password", blank=True, default="")

    processing_action = models.CharField(
        max_length=10, choices=ProcessingAction.choices, default=ProcessingAction.NONE
    )
    default_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Owner of the leads and cases this mailbox creates.",
    )
    default_case_assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    default_case_status = models.CharField(max_length=20, default="open")
    default_case_priority = models.CharField(max_length=20, default="normal")
    lead_join_open_lead = models.BooleanField(
        "join the sender's open lead",
        default=True,
        help_text="A new email from a sender with an open lead in this mailbox joins that lead.",
    )
    reopen_resolved_cases = models.BooleanField(
        default=True, help_text="A reply to a resolved case reopens it."
    )
    sender_name = models.CharField(
        "display name of answers",
        max_length=100,
        blank=True,
        help_text="The name in From of what staff send, e.g. 'Alex from Support'; empty: the label.",
    )
    signature = models.TextField(
        blank=True, help_text="Plain text put under every answer (an agent's own signature wins)."
    )
    imap_sent_folder = models.CharField(
        "IMAP Sent folder",
        max_length=255,
        blank=True,
        default="Sent",
        help_text="A copy of every answer is appended here (flagged \\Seen) for people who read "
        "the mailbox in a mail client; empty: no copy.",
    )
    auto_reply_window_hours = models.PositiveIntegerField(
        "auto-reply rate limit (hours)",
        default=24,
        help_text="At most one auto-response per answered address (Reply-To, else From) within "
        "this many hours.",
    )
    auto_reply_hourly_cap = models.PositiveIntegerField(
        "auto-replies per hour (cap)",
        default=100,
        help_text="At most this many auto-responses from this mailbox in any hour, whoever they go "
        "to; beyond it they are suppressed with the reason. 0 = no auto-responses at all.",
    )

    authorized_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="authorized_mailboxes"
    )
    authorized_groups = models.ManyToManyField(Group, blank=True, related_name="authorized_mailboxes")

    is_active = models.BooleanField(default=True)
    poll_interval = models.PositiveIntegerField(default=60, help_text="Seconds between two polls.")
    history_import = models.CharField(
        max_length=10,
        choices=HistoryImport.choices,
        default=HistoryImport.ALL,
        help_text="What to do with the messages already in the folder at the first connection. "
        "History is stored but never processed nor auto-answered.",
    )
    history_since = models.DateField(null=True, blank=True)

    # Sync state (RFC 3501 §2.3.1.1: a UID is only meaningful together with its UIDVALIDITY).
    imap_uidvalidity = models.BigIntegerField("IMAP UIDVALIDITY", null=True, blank=True, editable=False)
    imap_last_uid = models.BigIntegerField("last stored UID", default=0, editable=False)
    # Messages up to this UID were in the folder before mailhub first saw it (or before the folder
    # was recreated): they are stored as history and never processed.
    imap_history_last_uid = models.BigIntegerField("last history UID", default=0, editable=False)
    # UIDs above the cursor that the server lists but would not deliver, with the number of polls
    # that asked for each in vain ({"uid": polls}); after MAILHUB_UNDELIVERED_MAX_POLLS a
    # placeholder email is stored and the cursor steps over it, so no mailbox sticks for ever.
    imap_undelivered_polls = models.JSONField(default=dict, blank=True, editable=False)
    last_polled_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    next_poll_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Poll lease: one poll per mailbox at a time across all workers; expires if its worker dies.
    poll_lease_token = models.CharField(max_length=64, blank=True, editable=False)
    poll_lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # IDLE lease (mailhub/idle.py): one IDLE connection per mailbox across every supervisor of the
    # installation; a supervisor renews it while it lives, a dead one's simply expires. `idle_live`
    # says the holder's connection is idling right now: then polling only runs as a safety net
    # (MAILHUB_IDLE_SAFETY_POLL_SECONDS), and only while the lease has not expired.
    idle_lease_token = models.CharField(max_length=64, blank=True, editable=False)
    idle_lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    idle_live = models.BooleanField(default=False, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MailboxQuerySet.as_manager()

    class Meta:
        ordering = ["label"]
        verbose_name_plural = "mailboxes"

    def __str__(self) -> str:
        return f"{self.label} <{self.email}>"

    # The only two places that decrypt a mailbox's secrets: everything else loads the row without
    # needing a key (see mailboxes/encryption.py).
    # With OAuth2 the caller passes the access token (mailboxes.services.oauth gets it): the
    # stored password is then never sent.
    def imap_settings(self, *, oauth2_token: str = "") -> ImapSettings:
        """Raises SecretDecryptionError (IMAP_KEY_MISSING_ERROR) when the key is gone."""
        try:
            password = "" if self.imap_auth == AuthMethod.OAUTH2 else self.imap_password.reveal()
        except SecretDecryptionError as exc:
            raise SecretDecryptionError(IMAP_KEY_MISSING_ERROR) from exc
        return ImapSettings(
            host=self.imap_host,
            port=self.imap_port,
            security=Security(self.imap_security),
            username=self.imap_username,
            password=password,
            oauth2_token=oauth2_token if self.imap_auth == AuthMethod.OAUTH2 else "",
            folder=self.imap_folder,
            timeout=settings.MAILHUB_NETWORK_TIMEOUT,
            ca_file=settings.MAILHUB_TLS_CA_FILE,
        )

    def smtp_settings(self, *, oauth2_token: str = "") -> SmtpSettings:
        """Raises SecretDecryptionError (SMTP_KEY_MISSING_ERROR) when the key is gone."""
        try:
            password = "" if self.smtp_auth == AuthMethod.OAUTH2 else self.smtp_password.reveal()
        except SecretDecryptionError as exc:
            raise SecretDecryptionError(SMTP_KEY_MISSING_ERROR) from exc
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            security=Security(self.smtp_security),
            username=self.smtp_username,
            password=password,
            oauth2_token=oauth2_token if self.smtp_auth == AuthMethod.OAUTH2 else "",
            timeout=settings.MAILHUB_NETWORK_TIMEOUT,
            ca_file=settings.MAILHUB_TLS_CA_FILE,
            data_timeout=settings.MAILHUB_SMTP_DATA_TIMEOUT,
        )


class SubjectSortKey(models.Func):
    """Case-insensitive sort key of a subject: its first 100 characters, lowercased.

    The length is written into the SQL, not passed as a query parameter, so the grid's ORDER BY
    and keyset WHERE are character-for-character the indexed expression (SQLite only uses an
    expression index for an identical expression), and a PostgreSQL B-tree entry stays far below
    its ~2.7 kB limit whatever the subject's length.
    """

    template = "LOWER(SUBSTR(%(expressions)s, 1, 100))"
    output_field = models.TextField()


class Email(models.Model):
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="emails")
    # Null for an outgoing email: it was never in the polled folder.
    uidvalidity = models.BigIntegerField("IMAP UIDVALIDITY", null=True, blank=True)
    uid = models.BigIntegerField("IMAP UID", null=True, blank=True)
    direction = models.CharField(
        max_length=10, choices=EmailDirection.choices, default=EmailDirection.INCOMING
    )
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who wrote this outgoing email.",
    )

    message_id = models.CharField(max_length=998, blank=True, db_index=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True, help_text="Message-IDs, one per line.")
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    from_address = models.CharField(max_length=320, blank=True, db_index=True)
    reply_to = models.JSONField(default=list, blank=True, help_text='[["name", "address"], ...]')
    to = models.JSONField(default=list, blank=True, help_text='[["name", "address"], ...]')
    cc = models.JSONField(default=list, blank=True, help_text='[["name", "address"], ...]')
    headers = models.JSONField(
        default=list, blank=True, help_text='Top-level headers: [["Name", "value"], ...]'
    )
    date = models.DateTimeField(null=True, blank=True, help_text="The Date header, if it was valid.")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    stored_at = models.DateTimeField(auto_now_add=True)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    size = models.PositiveBigIntegerField(default=0, help_text="Size of the raw message in bytes.")
    raw = models.FileField(upload_to="raw/%Y/%m/%d/", max_length=255)
    content_sha256 = models.CharField(max_length=64, help_text="SHA-256 of the raw message.")
    identity = models.CharField(
        max_length=64,
        help_text="Message-ID + body hash: recognises a message again when the folder is recreated.",
    )
    has_attachments = models.BooleanField(default=False)
    parse_problem = models.TextField(blank=True)
    is_history = models.BooleanField(
        default=False, help_text="Imported from the folder's past: never processed or auto-answered."
    )

    # The processing action and auto-responses run after the email is committed; this state lets
    # the next poll finish what a crash interrupted.
    processing_status = models.CharField(
        max_length=10, choices=ProcessingStatus.choices, default=ProcessingStatus.PENDING, db_index=True
    )
    processing_error = models.TextField(blank=True)
    processing_attempts = models.PositiveIntegerField(default=0)
    processing_next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a failed processing is tried again (backoff)."
    )

    lead = models.ForeignKey(
        "processing.Lead", null=True, blank=True, on_delete=models.SET_NULL, related_name="emails"
    )
    case = models.ForeignKey(
        "processing.Case", null=True, blank=True, on_delete=models.SET_NULL, related_name="emails"
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "uidvalidity", "uid"], name="email_unique_mailbox_uidvalidity_uid"
            ),
            models.UniqueConstraint(fields=["mailbox", "identity"], name="email_unique_mailbox_identity"),
            # An email belongs to a lead or to a case, never both.
            models.CheckConstraint(
                condition=Q(lead__isnull=True) | Q(case__isnull=True), name="email_lead_or_case"
            ),
        ]
        indexes = [
            models.Index(fields=["mailbox", "-received_at", "-id"], name="email_mailbox_received"),
            # The staff grid pages by seek (keyset) on (sort key, id) within a mailbox: each sort
            # has its index so that any page, however deep, reads only the rows it shows.
            models.Index(fields=["mailbox", "from_address", "id"], name="email_mailbox_sender"),
            models.Index(F("mailbox"), SubjectSortKey("subject"), F("id"), name="email_mailbox_subject"),
            # The "has case" / "has lead" filters: without these the newest-first walk of a
            # mailbox where few emails match would read every email to fill one page.
            models.Index(
                fields=["mailbox", "-received_at", "-id"],
                condition=Q(case__isnull=False),
                name="email_mailbox_received_case",
            ),
            models.Index(
                fields=["mailbox", "-received_at", "-id"],
                condition=Q(lead__isnull=False),
                name="email_mailbox_received_lead",
            ),
            # "New since your last visit" counts emails above a per-user id watermark.
            models.Index(fields=["mailbox", "id"], name="email_mailbox_id"),
            # The thread of an email: the replies that name it in In-Reply-To (RFC 5322 §3.6.4).
            models.Index(fields=["mailbox", "in_reply_to"], name="email_mailbox_in_reply_to"),
            # A case's timeline pages its emails by seek on (received_at, id) within the case:
            # a page of a case with 10,000 emails reads 51 index entries, not all 10,000 to sort.
            models.Index(fields=["case", "received_at", "id"], name="email_case_received"),
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} — {self.from_address or '(unknown sender)'}"

    def get_absolute_url(self) -> str:
        return reverse("emails:detail", args=[self.pk])


class Attachment(models.Model):
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    file = models.FileField(upload_to="attachments/%Y/%m/%d/", max_length=255)
    content_id = models.CharField(max_length=998, blank=True)
    is_inline = models.BooleanField(default=False)

    class Meta:
        ordering = ["email", "id"]

    def __str__(self) -> str:
        return self.filename


class MailboxViewPreference(models.Model):
    """The view a user last chose in My Emails, kept across visits and devices.

    `mailbox` null means "All my mailboxes". Access is checked again whenever it is read: a
    mailbox the user has lost access to is never shown, the view falls back to all mailboxes.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailbox_view_preference"
    )
    mailbox = models.ForeignKey(Mailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.mailbox.label if self.mailbox else 'All my mailboxes'}"


class MailboxVisit(models.Model):
    """Up to which email a user has looked at a mailbox: emails stored after it are "new" to them.

    A watermark on the email id rather than on a date: ids grow in storing order, while
    `received_at` is the server's INTERNALDATE and may lie before a visit that preceded the poll.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mailbox_visits"
    )
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="visits")
    seen_up_to_email_id = models.BigIntegerField(default=0)
    visited_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "mailbox"], name="mailbox_visit_unique_user_mailbox"),
        ]

    def __str__(self) -> str:
        return f"{self.user} saw {self.mailbox_id} up to email {self.seen_up_to_email_id}"


class OutboundStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Not sent"
    # The connection died after the whole message was sent, before the server's reply (or the
    # worker died mid-send): it may have been delivered. Never retried automatically; a person
    # sends it again after checking it did not arrive.
    UNCERTAIN = "uncertain", "Unknown outcome"


class SentCopyStatus(models.TextChoices):
    NOT_WANTED = "not_wanted", "No Sent folder"
    PENDING = "pending", "To append"
    APPENDING = "appending", "Appending"
    DONE = "done", "In the Sent folder"
    FAILED = "failed", "Not appended"


class OutboundMessage(models.Model):
    """The delivery of one outgoing email: sent at most once, then copied to the Sent folder.

    The message itself is the email's raw original (`email.raw`), the exact bytes that go out;
    the envelope adds the Bcc recipients, which are not in those bytes (RFC 5322 §3.6.3).
    `submission_key` comes from the compose form: a second submit of the same form is refused
    by the database, so a double click or a resubmitted page never makes a second message.
    """

    email = models.OneToOneField(Email, on_delete=models.CASCADE, related_name="outbound")
    submission_key = models.CharField(max_length=64, unique=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    envelope_recipients = models.JSONField(default=list, help_text="Every RCPT TO address, Bcc included.")
    bcc = models.JSONField(default=list, blank=True, help_text='[["name", "address"], ...]')
    status = models.CharField(
        max_length=12, choices=OutboundStatus.choices, default=OutboundStatus.PENDING, db_index=True
    )
    reason = models.TextField(blank=True, help_text="The last error, or why it was not sent.")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sent_copy_status = models.CharField(
        max_length=12, choices=SentCopyStatus.choices, default=SentCopyStatus.PENDING, db_index=True
    )
    sent_copy_error = models.TextField(blank=True)
    sent_copy_attempts = models.PositiveIntegerField(default=0)
    sent_copy_claimed_at = models.DateTimeField(null=True, blank=True)
    sent_copy_next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a Sent-folder copy that failed transiently is tried again."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["sent_by", "created_at"], name="outbound_sender_created")]

    def __str__(self) -> str:
        return f"outbound {self.pk} of email {self.email_id}: {self.status}"
