"""The view selector of My Emails (All my mailboxes / one mailbox), its counts of new emails, and
which rows of the grid are new to the reader."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from mailboxes.models import Email, Mailbox, MailboxViewPreference, MailboxVisit

from .access import mailboxes_visible_to

# "New" counts stop here: counting 100,000 unseen emails on every page would cost more than
# showing "999+".
NEW_COUNT_CAP = 999


class _CappedCount(Subquery):
    """COUNT(*) of a subquery that is itself LIMITed: cost bounded by the cap, not the table."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) AS capped_count)"
    output_field = IntegerField()


@dataclass(frozen=True)
class MailboxChoice:
    """A mailbox of the view selector, with what its reader has not seen yet."""

    mailbox: Mailbox
    new_count: int  # emails above `seen_up_to`, counted up to NEW_COUNT_CAP + 1 only
    seen_up_to: int  # the highest email id of the reader's previous visit (0: never visited)


@dataclass(frozen=True)
class EmailView:
    """What My Emails shows: `chosen` None means "All my mailboxes"."""

    choices: list[MailboxChoice]
    chosen: MailboxChoice | None

    @property
    def mailbox(self) -> Mailbox | None:
        return self.chosen.mailbox if self.chosen else None

    @property
    def mailbox_ids(self) -> list[int]:
        return [self.chosen.mailbox.pk] if self.chosen else [choice.mailbox.pk for choice in self.choices]

    @property
    def total_new(self) -> int:
        return sum(choice.new_count for choice in self.choices)

    @property
    def new_count(self) -> int:
        """New emails in what the view shows: the chosen mailbox, or all of them."""
        return self.chosen.new_count if self.chosen else self.total_new


def email_view_for_user(*, user: User) -> EmailView:
    """The user's mailboxes with their count of new emails, and the view they chose last.

    Two queries whatever the number of mailboxes. A saved mailbox the user can no longer access
    is ignored: the view falls back to all their mailboxes.
    """
    seen_up_to = Coalesce(
        Subquery(
            MailboxVisit.objects.filter(user=user, mailbox=OuterRef("pk")).values("seen_up_to_email_id")[:1]
        ),
        Value(0),
    )
    unseen = Email.objects.filter(mailbox=OuterRef("pk"), pk__gt=OuterRef("seen_up_to")).order_by()
    choices = [
        MailboxChoice(mailbox=box, new_count=box.new_count, seen_up_to=box.seen_up_to)
        for box in mailboxes_visible_to(user)
        .annotate(seen_up_to=seen_up_to)
        .annotate(new_count=_CappedCount(unseen.values("pk")[: NEW_COUNT_CAP + 1]))
        .order_by("label")
    ]
    preference = MailboxViewPreference.objects.filter(user=user).values_list("mailbox_id", flat=True).first()
    chosen = next((choice for choice in choices if choice.mailbox.pk == preference), None)
    return EmailView(choices=choices, chosen=chosen)


@dataclass(frozen=True)
class GridRow:
    """An email of the grid, and whether it is new to the reader."""

    email: Email
    is_new: bool


def email_grid_rows(*, emails: list[Email], view: EmailView) -> list[GridRow]:
    """The rows that are new to this reader: above the watermark of their previous visit."""
    seen_before = {choice.mailbox.pk: choice.seen_up_to for choice in view.choices}
    return [GridRow(email=email, is_new=email.pk > seen_before.get(email.mailbox_id, 0)) for email in emails]


def latest_email_ids(*, mailbox_ids: list[int]) -> dict[int, int]:
    """Per mailbox, the highest email id stored so far (the watermark of "seen"): one query.

    Per mailbox, not one global maximum: on PostgreSQL ids are taken at insert, not at commit,
    so a long batch of one mailbox can commit after another mailbox stored a higher id. Within a
    mailbox, polls run one at a time (the lease), so its ids do commit in order.
    """
    # A correlated "newest id of this mailbox" per mailbox: one seek each in the (mailbox, id)
    # index, where GROUP BY + MAX would walk every email of a 100,000-email mailbox.
    newest = Email.objects.filter(mailbox=OuterRef("pk")).order_by("-pk").values("pk")[:1]
    rows = (
        Mailbox.objects.filter(pk__in=mailbox_ids)
        .annotate(highest=Coalesce(Subquery(newest), Value(0)))
        .values_list("pk", "highest")
    )
    return dict(rows)
