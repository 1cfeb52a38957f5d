"""Lenient text decoding for hostile e-mail, one module per topic. Pure: no Django, no I/O.

Nothing here raises for bad input: every function returns its best guess and appends a
human-readable note to ``problems`` when it had to guess, so the loss is visible to whoever reads
the parse result (:mod:`mailboxes.parsing`).
"""
