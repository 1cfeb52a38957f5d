"""The admin keeps the staff pages' promise: a staff user who is not a superuser sees and acts
only on the mailboxes granted to them, and a viewer changes nothing."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.urls import reverse

from mailboxes.models import Email, Mailbox, ProcessingStatus
from processing.models import Case, Lead
from tests.factories import (
    AttachmentFactory,
    AutoReplyFactory,
    AutoResponseRuleFactory,
    CaseFactory,
    EmailFactory,
    EmailTemplateFactory,
    LeadFactory,
    MailboxFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

APPS = ("mailboxes", "processing", "autoresponse")
# Every admin page whose rows belong to a mailbox.
SCOPED_MODELS = [
    ("mailboxes", "mailbox"),
    ("mailboxes", "email"),
    ("mailboxes", "attachment"),
    ("processing", "lead"),
    ("processing", "case"),
    ("autoresponse", "autoresponserule"),
    ("autoresponse", "autoreply"),
]


@dataclass
class Side:
    """One mailbox with a row of every kind."""

    mailbox: Mailbox
    email: Email
    rows: dict


def _side(label: str) -> Side:
    mailbox = MailboxFactory(label=label)
    email = EmailFactory(
        mailbox=mailbox, subject=f"{label} subject", processing_status=ProcessingStatus.FAILED
    )
    rule = AutoResponseRuleFactory(mailbox=mailbox, name=f"{label} rule")
    rows = {
        "mailbox": mailbox,
        "email": email,
        "attachment": AttachmentFactory(email=email, filename=f"{label}.pdf"),
        "lead": LeadFactory(mailbox=mailbox, name=f"{label} lead"),
        "case": CaseFactory(mailbox=mailbox, subject=f"{label} case"),
        "autoresponserule": rule,
        "autoreply": AutoReplyFactory(email=email, rule=rule, recipient=f"{label.lower()}@example.com"),
    }
    return Side(mailbox, email, rows)


def _staff(*, actions: tuple[str, ...]) -> object:
    user = UserFactory(is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=APPS, codename__regex=rf"^({'|'.join(actions)})_"
        )
    )
    return user


@pytest.fixture
def sides():
    return _side("Granted"), _side("Other")


@pytest.fixture
def viewer(client, sides):
    user = _staff(actions=("view",))
    sides[0].mailbox.authorized_users.add(user)
    client.force_login(user)
    return client


@pytest.fixture
def editor(client, sides):
    user = _staff(actions=("view", "change", "add", "delete"))
    sides[0].mailbox.authorized_users.add(user)
    client.force_login(user)
    return client


@pytest.mark.parametrize(("app", "model"), SCOPED_MODELS)
def test_changelist_shows_only_the_granted_mailboxes_rows(viewer, sides, app, model):
    granted, _other = sides
    page = viewer.get(reverse(f"admin:{app}_{model}_changelist"))
    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [granted.rows[model]]
    assert "Other" not in page.content.decode()  # neither a row nor the mailbox filter's label


@pytest.mark.parametrize(("app", "model"), SCOPED_MODELS)
def test_change_page_of_another_mailboxs_row_is_not_found(viewer, sides, app, model):
    granted, other = sides
    assert (
        viewer.get(reverse(f"admin:{app}_{model}_change", args=[granted.rows[model].pk])).status_code == 200
    )
    response = viewer.get(reverse(f"admin:{app}_{model}_change", args=[other.rows[model].pk]))
    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))


def _run(client, changelist: str, action: str, objects) -> list[str]:
    response = client.post(
        reverse(changelist), {"action": action, "_selected_action": [obj.pk for obj in objects]}, follow=True
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("action", ["convert_to_case", "convert_to_lead", "retry_processing"])
def test_a_viewer_cannot_run_email_actions(viewer, sides, action):
    granted, _other = sides
    cases, leads = Case.objects.count(), Lead.objects.count()
    messages = _run(viewer, "admin:mailboxes_email_changelist", action, [granted.email])
    assert messages == []  # the viewer has no action at all: the POST only lists the emails
    granted.email.refresh_from_db()
    assert (granted.email.processing_status, granted.email.case_id, granted.email.lead_id) == (
        ProcessingStatus.FAILED,
        None,
        None,
    )
    assert (Case.objects.count(), Lead.objects.count()) == (cases, leads)


def test_a_viewer_cannot_test_a_connection(viewer, sides):
    messages = _run(viewer, "admin:mailboxes_mailbox_changelist", "test_connection", [sides[0].mailbox])
    assert messages == []  # no "IMAP ..." outcome: nothing was tried


@pytest.mark.parametrize("action", ["convert_to_case", "retry_processing"])
def test_an_editor_acts_only_on_the_granted_mailboxes_emails(editor, sides, action):
    granted, other = sides
    _run(editor, "admin:mailboxes_email_changelist", action, [granted.email, other.email])
    other.email.refresh_from_db()
    assert (other.email.processing_status, other.email.case_id) == (ProcessingStatus.FAILED, None)
    granted.email.refresh_from_db()
    if action == "retry_processing":
        assert granted.email.processing_status == ProcessingStatus.PENDING
    else:
        assert granted.email.case_id is not None


def test_an_editor_can_pick_only_granted_mailboxes_in_forms(editor, sides):
    granted, _other = sides
    page = editor.get(
        reverse("admin:autoresponse_autoresponserule_change", args=[granted.rows["autoresponserule"].pk])
    )
    assert list(page.context["adminform"].form.fields["mailbox"].queryset) == [granted.mailbox]
    lead_form = editor.get(reverse("admin:processing_lead_add")).context["adminform"].form
    assert list(lead_form.fields["mailbox"].queryset) == [granted.mailbox]
    email_form = (
        editor.get(reverse("admin:mailboxes_email_change", args=[granted.email.pk])).context["adminform"].form
    )
    assert list(email_form.fields["case"].queryset) == [granted.rows["case"]]
    assert list(email_form.fields["lead"].queryset) == [granted.rows["lead"]]


def test_an_editor_cannot_move_a_lead_to_another_mailbox(editor, sides):
    granted, other = sides
    lead = granted.rows["lead"]
    response = editor.post(
        reverse("admin:processing_lead_change", args=[lead.pk]),
        {"name": lead.name, "email": lead.email, "status": lead.status, "mailbox": other.mailbox.pk},
    )
    assert response.status_code == 200
    assert "mailbox" in response.context["adminform"].form.errors
    lead.refresh_from_db()
    assert lead.mailbox_id == granted.mailbox.pk


def test_a_template_used_by_another_mailbox_is_read_only_for_an_editor(editor, sides):
    granted, other = sides
    shared = other.rows["autoresponserule"].template
    own = granted.rows["autoresponserule"].template
    unused = EmailTemplateFactory()
    for template, editable in ((shared, False), (own, True), (unused, True)):
        page = editor.get(reverse("admin:autoresponse_emailtemplate_change", args=[template.pk]))
        assert page.status_code == 200
        assert page.context["has_change_permission"] is editable, template
    response = editor.post(
        reverse("admin:autoresponse_emailtemplate_change", args=[shared.pk]),
        {"name": "hijacked", "subject": "x", "text_body": "x", "html_body": ""},
    )
    assert response.status_code == 403
    shared.refresh_from_db()
    assert shared.name != "hijacked"
