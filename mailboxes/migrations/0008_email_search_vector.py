from importlib import import_module

from django.db import migrations

_vendor = import_module("mailboxes.migrations.0003_staff_pages")

# PostgreSQL: the grid's search reads a STORED tsvector column instead of an expression index.
# With the expression index, checking one row meant computing its tsvector again from up to
# 100,000 characters of text, so a word found in most emails (best answered by walking the
# newest emails and checking each) cost ~7x the first page; and ANALYZE keeps no statistics for
# an expression index's lexemes, so the planner could not tell a common word from a rare one.
# A stored column has both: it is read, not recomputed, and ANALYZE collects its most common
# lexemes (prefix queries are estimated from them), so the planner picks the GIN index for rare
# words and the date walk for common ones. The expression is the one of 0003, unchanged.
# Adding a stored generated column rewrites the table once (minutes on millions of rows).
POSTGRES_SEARCH_COLUMN = [
    """
    ALTER TABLE mailboxes_email ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' '
            || translate(coalesce(from_address, ''), '@.+-_', '     ') || ' '
            || left(coalesce(text_body, ''), 100000))
    ) STORED
    """,
    "CREATE INDEX mailboxes_email_search_vector ON mailboxes_email USING gin (search_vector)",
    _vendor.POSTGRES_SEARCH_INDEX_DROP,
]
POSTGRES_SEARCH_COLUMN_DROP = [
    _vendor.POSTGRES_SEARCH_INDEX,
    "DROP INDEX IF EXISTS mailboxes_email_search_vector",
    "ALTER TABLE mailboxes_email DROP COLUMN IF EXISTS search_vector",
]


class Migration(migrations.Migration):
    dependencies = [("mailboxes", "0007_outgoing_emails")]

    operations = [
        _vendor.VendorRunSQL("postgresql", POSTGRES_SEARCH_COLUMN, POSTGRES_SEARCH_COLUMN_DROP),
    ]
