"""Every message of the shared corpus goes through a real Dovecot into the database: none lost."""

import pytest

from mailboxes.models import Email
from mailboxes.parsing import parse_email
from mailboxes.services import mailbox_poll
from mailboxes.services.storing import message_identity
from tests.corpus import corpus_files, require_corpus
from tests.factories import MailboxFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db, pytest.mark.slow]


def test_whole_corpus_is_ingested_none_lost(imap_account, settings):
    require_corpus()
    settings.MAILHUB_FETCH_BATCH_MESSAGES = 25
    files = corpus_files()
    appended = {}
    for path in files:
        uid = imap_account.append(path.read_bytes())
        appended[uid] = path
    assert len(appended) == len(files) == 107

    mailbox = MailboxFactory.on_dovecot(
        imap_account,
        history_import="all",
    )
    result = mailbox_poll(mailbox_id=mailbox.pk)
    assert result.error == ""
    served = imap_account.messages()  # exactly what Dovecot serves over IMAP, by UID
    # Some corpus files are the same message twice (same Message-ID and body): kept once.
    stored = {email.uid: email for email in Email.objects.all()}
    assert result.history_count == len(stored)
    assert len(stored) + result.duplicate_count == len(files)

    for uid, path in appended.items():
        expected = parse_email(served[uid])
        if uid not in stored:
            identity = message_identity(served[uid], expected.message_id)
            twins = [email for email in stored.values() if email.identity == identity]
            assert len(twins) == 1, f"{path.name} neither stored nor recognised as a duplicate"
            continue
        email = stored[uid]
        with email.raw.open("rb") as raw_file:
            assert raw_file.read() == served[uid], path.name
        assert email.subject == expected.subject, path.name
        assert (email.from_name, email.from_address) == (
            expected.from_name[:255],
            expected.from_address[:320],
        ), path.name
        assert email.text_body == expected.text_body, path.name
        assert email.html_body == expected.html_body, path.name
        assert email.attachments.count() == len(expected.attachments), path.name
        names = sorted(a.filename for a in email.attachments.all())
        assert names == sorted(a.filename for a in expected.attachments), path.name
        sizes = sorted(a.size for a in email.attachments.all())
        assert sizes == sorted(a.size for a in expected.attachments), path.name
        for attachment in email.attachments.all():
            with attachment.file.open("rb") as stored_file:
                assert len(stored_file.read()) == attachment.size
        assert email.parse_problem == "\n".join(expected.problems), path.name
