"""A small IMAP4rev1 server that misbehaves on request, for what real Dovecot never does.

It speaks just enough of RFC 3501 for mailhub's poll (greeting, CAPABILITY, LOGIN, SELECT/EXAMINE,
UID SEARCH ALL / UID <set>, UID FETCH RFC822.SIZE / BODY.PEEK[] / INTERNALDATE, NOOP, LOGOUT), on
127.0.0.1, one thread per connection, any username and password. The knobs (plain attributes,
set before or between polls) make it leave things out as real servers do:

- `send_uidnext = False`: SELECT without UIDNEXT (required by RFC 3501 §6.3.1, omitted by some).
- `omit_size`: UIDs left out of the RFC822.SIZE answer.
- `omit_body_in_batch`: UIDs answered without their BODY[] literal when fetched with others,
  but delivered when fetched alone.
- `omit_body_always`: UIDs listed by SEARCH but never delivered.
- `expunge_on_body_fetch`: UIDs expunged the moment their body is asked for (then SEARCH no
  longer lists them), as when another client expunges between the listing and the fetch.
- `unsolicited_flags`: every FETCH also carries a `* n FETCH (FLAGS (\\Seen))` for each message,
  without UID, as Dovecot sends when another session changes flags.
- `answer_unasked`: a body FETCH also answers (with its body) for the highest UID not asked for.
- `no_on_batch_fetch`: a body FETCH of several UIDs ends in a tagged NO after its answers.

- `idle = True`: IDLE (RFC 2177) in CAPABILITY, "+ idling" to IDLE, OK to DONE; `idle_line`
  is sent right after "+ idling" (a huge line, say); `idle_silent`: after "+ idling" the
  server says nothing more and never answers DONE, as through a NAT that dropped the connection.

A UID left out of a body answer still gets `* n FETCH (UID u FLAGS ())`: other items, no BODY[].
`commands` records every command line received (LOGIN's password replaced).
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .common import LOCALHOST

_INTERNALDATE = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
_COMMAND = re.compile(rb"^(?P<tag>[^ ]+) (?P<command>[A-Za-z]+)(?: (?P<args>.*))?$")


@dataclass
class _Message:
    uid: int
    raw: bytes


@dataclass
class FakeImapServer:
    uidvalidity: int = 1234
    send_uidnext: bool = True
    omit_size: set[int] = field(default_factory=set)
    omit_body_in_batch: set[int] = field(default_factory=set)
    omit_body_always: set[int] = field(default_factory=set)
    expunge_on_body_fetch: set[int] = field(default_factory=set)
    unsolicited_flags: bool = False
    answer_unasked: bool = False
    no_on_batch_fetch: bool = False
    idle: bool = False
    idle_line: bytes = b""
    idle_silent: bool = False
    host: str = LOCALHOST
    port: int = 0
    commands: list[str] = field(default_factory=list)
    body_fetches: list[list[int]] = field(default_factory=list)  # UIDs of each body FETCH

    def __post_init__(self) -> None:
        self._messages: list[_Message] = []
        self._next_uid = 1
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- the folder ------------------------------------------------------------------------------

    def append(self, raw: bytes) -> int:
        with self._lock:
            uid = self._next_uid
            self._next_uid += 1
            self._messages.append(_Message(uid, raw))
            return uid

    def expunge(self, uid: int) -> None:
        with self._lock:
            self._messages = [message for message in self._messages if message.uid != uid]

    def uids(self) -> list[int]:
        with self._lock:
            return [message.uid for message in self._messages]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._listener = socket.create_server((self.host, 0))
        self.port = self._listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FakeImapServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- the protocol ----------------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        reader = conn.makefile("rb")
        try:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] fake IMAP ready\r\n")
            idle_tag = b""
            for line in reader:
                if idle_tag and line.rstrip(b"\r\n").upper() == b"DONE":
                    self.commands.append("DONE")
                    if not self.idle_silent:
                        conn.sendall(idle_tag + b" OK IDLE terminated\r\n")
                    idle_tag = b""
                    continue
                match = _COMMAND.match(line.rstrip(b"\r\n"))
                if match is None:
                    conn.sendall(b"* BAD unparsable command\r\n")
                    continue
                tag, command = match["tag"], match["command"].upper()
                args = (match["args"] or b"").decode()
                self.commands.append(
                    f"{command.decode()} {args}" if command != b"LOGIN" else "LOGIN <hidden>"
                )
                if command == b"LOGOUT":
                    conn.sendall(b"* BYE fake IMAP logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
                    return
                if command == b"IDLE" and self.idle:
                    idle_tag = tag
                    conn.sendall(b"+ idling\r\n" + self.idle_line)
                    continue
                conn.sendall(self._answer(tag, command, args))
        except OSError:
            pass
        finally:
            reader.close()
            conn.close()

    def _answer(self, tag: bytes, command: bytes, args: str) -> bytes:
        if command == b"CAPABILITY":
            caps = b"IMAP4rev1 IDLE" if self.idle else b"IMAP4rev1"
            return b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK CAPABILITY completed\r\n"
        if command in (b"LOGIN", b"NOOP"):
            return tag + b" OK " + command + b" completed\r\n"
        if command in (b"SELECT", b"EXAMINE"):
            return self._select(tag)
        if command == b"UID":
            sub, _, rest = args.partition(" ")
            if sub.upper() == "SEARCH":
                return self._search(tag, rest)
            if sub.upper() == "FETCH":
                return self._fetch(tag, rest)
        return tag + b" BAD command not supported by the fake server\r\n"

    def _select(self, tag: bytes) -> bytes:
        with self._lock:
            exists, uidnext = len(self._messages), self._next_uid
        lines = [
            f"* {exists} EXISTS",
            "* 0 RECENT",
            "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)",
            f"* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid",
        ]
        if self.send_uidnext:
            lines.append(f"* OK [UIDNEXT {uidnext}] predicted next UID")
        return "".join(line + "\r\n" for line in lines).encode() + tag + b" OK [READ-ONLY] done\r\n"

    def _search(self, tag: bytes, criteria: str) -> bytes:
        words = criteria.split()
        with self._lock:
            uids = [message.uid for message in self._messages]
        if words == ["ALL"]:
            found = uids
        elif len(words) == 2 and words[0].upper() == "UID":
            found = sorted(_uid_set(words[1], uids))
        else:
            return tag + b" BAD search criteria not supported by the fake server\r\n"
        return f"* SEARCH {' '.join(map(str, found))}".rstrip().encode() + b"\r\n" + tag + b" OK done\r\n"

    def _fetch(self, tag: bytes, args: str) -> bytes:
        uid_set, _, items = args.partition(" ")
        items = items.upper()
        with self._lock:
            asked = _uid_set(uid_set, [message.uid for message in self._messages])
            wants_body = "BODY.PEEK[]" in items or "BODY[]" in items
            if wants_body:
                self.body_fetches.append(sorted(asked))
                vanished = asked & self.expunge_on_body_fetch
                expunged_seqs = [
                    seq for seq, message in enumerate(self._messages, 1) if message.uid in vanished
                ]
                self._messages = [message for message in self._messages if message.uid not in vanished]
                asked -= vanished
            else:
                expunged_seqs = []
            snapshot = list(enumerate(self._messages, 1))
        out = bytearray()
        if self.unsolicited_flags:
            for seq, _message in snapshot:
                out += f"* {seq} FETCH (FLAGS (\\Seen))\r\n".encode()
        answered = set(asked)
        if wants_body and self.answer_unasked:
            unasked = [message.uid for _seq, message in snapshot if message.uid not in asked]
            if unasked:
                answered.add(max(unasked))
        for seq, message in snapshot:
            if message.uid not in answered:
                continue
            if "RFC822.SIZE" in items and message.uid in self.omit_size:
                continue
            parts = [f"UID {message.uid}".encode()]
            if "RFC822.SIZE" in items:
                parts.append(f"RFC822.SIZE {len(message.raw)}".encode())
            if wants_body:
                withheld = message.uid in self.omit_body_always or (
                    message.uid in self.omit_body_in_batch and len(asked) > 1
                )
                if withheld:
                    parts.append(b"FLAGS ()")
                else:
                    parts.append(f"BODY[] {{{len(message.raw)}}}\r\n".encode() + message.raw)
            if "INTERNALDATE" in items:
                parts.append(_INTERNALDATE.strftime('INTERNALDATE "%d-%b-%Y %H:%M:%S +0000"').encode())
            out += f"* {seq} FETCH (".encode() + b" ".join(parts) + b")\r\n"
        # RFC 3501 §7.4.1: EXPUNGE may be sent during a UID command; highest first keeps the
        # sequence numbers of the others valid.
        for seq in reversed(expunged_seqs):
            out += f"* {seq} EXPUNGE\r\n".encode()
        if wants_body and self.no_on_batch_fetch and len(asked) > 1:
            return bytes(out) + tag + b" NO Some messages could not be FETCHed (Failure)\r\n"
        return bytes(out) + tag + b" OK FETCH completed\r\n"


def _uid_set(text: str, uids: list[int]) -> set[int]:
    """The existing UIDs a sequence set names (RFC 3501 §9: "*" is the highest UID in use)."""
    highest = max(uids, default=0)
    wanted: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition(":")
        first = highest if low == "*" else int(low)
        last = first if not high else (highest if high == "*" else int(high))
        first, last = min(first, last), max(first, last)
        wanted.update(uid for uid in uids if first <= uid <= last)
    return wanted
