"""A throw-away Dovecot IMAP server: any username logs in with PASSWORD and gets an empty mailbox.

Each test uses a fresh account (`new_account()`), so one server serves a whole test session
without any cleanup between tests. The helpers talk IMAP to the server itself (never write
maildir files behind its back), so what the tests set up is what a real client would see.
"""

import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient

from .common import (
    LOCALHOST,
    ManagedServer,
    ServerStartError,
    current_user,
    free_port,
    is_root,
    kill_group,
    register_running,
    require_binary,
    spawn,
    tail,
    unregister_running,
    user_ids,
    wait_for_port,
    world_readable_tempdir,
)
from .oauth import OAuthKeys
from .tls import TlsFiles

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "secret"
RECENT = rb"\Recent"
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")

_CONFIG = """\
# Written by tests/servers/dovecot.py for one test run: IMAP only, loopback only, {tls_summary}.
protocols = imap
listen = {host}
base_dir = {base}/run
state_dir = {base}/state
instance_name = {instance}
log_path = {base}/dovecot.log
{ssl_settings}
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
# Wrong passwords are tested on purpose: don't make them slow (see also anvil below).
auth_failure_delay = 0
login_greeting = mailhub test IMAP ready.
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
# The mail user may be a system account (uid < 500), which Dovecot refuses by default.
first_valid_uid = {mail_uid}
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
# Fallback polling when inotify can't tell an IDLEing session about new mail.
mailbox_idle_check_interval = 1 secs

namespace inbox {{
  inbox = yes
  separator = {separator}
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}

{oauth2_passdb}passdb {{
  driver = static
{static_mechanisms}  args = password={password}
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={base}/home/%u
}}

protocol imap {{
  # Tests open many connections for one account from one IP; the default (10) is too low.
  mail_max_userip_connections = 200
}}

service imap-login {{
  # No chroot: it needs root, and the non-root mode must behave the same.
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
{imaps_listener}
  }}
}}

service anvil {{
  chroot =
  # Without this socket the auth process disables its per-IP penalty, which otherwise delays
  # every login from 127.0.0.1 by up to 15 s after a few failed ones.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


# RFC 7628 OAUTHBEARER and Google's XOAUTH2 against an oauth2 passdb that validates the JWT itself
# (no HTTP introspection): the password passdb then only serves PLAIN and LOGIN.
_OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {base}/dovecot-oauth2.conf.ext
}}
"""
_STATIC_MECHANISMS = "  mechanisms = plain login\n"
# Dovecot 2.3's oauth2 passdb settings (doc.dovecot.org/2.3/configuration_manual/authentication/
# oauth2): the key of <azp>/<alg>/<kid> comes from the fs dict (see oauth.OAuthKeys), the login
# name must equal the token's `username_attribute` claim, `iss` must be one of `issuers` and
# `client_id` must be in `aud`. `sub` and `exp` are always required.
_OAUTH2_CONFIG = """\
introspection_mode = local
local_validation_key_dict = fs:posix:prefix={keys}/
username_attribute = {username_claim}
issuers = {issuer}
client_id = {audience}
"""

_NO_TLS = "ssl = no"
_NO_IMAPS = "    port = 0"
# STARTTLS stays available on the plain port; plaintext logins too (disable_plaintext_auth).
_TLS = """\
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}"""
_IMAPS = """\
    address = {host}
    port = {port}
    ssl = yes"""


class DovecotServer(ManagedServer):
    """`dovecot -F` with its own config and state in a temp dir, listening on 127.0.0.1.

    With `tls` (see tls.py), the plain port `port` offers STARTTLS and a second listener on
    `tls_port` speaks implicit TLS (imaps); without it, there is no TLS at all (`ssl = no`,
    no STARTTLS capability) and `tls_port` is None.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        separator: str = ".",
        host: str = LOCALHOST,
        tls: TlsFiles | None = None,
        password: str = PASSWORD,
        auth_mechanisms: str = "plain login",
        oauth: OAuthKeys | None = None,
    ) -> None:
        # `password` is every account's (a non-ASCII one needs AUTHENTICATE PLAIN: LOGIN is
        # ASCII-only); `auth_mechanisms` is what AUTH=... the server advertises. With `oauth`,
        # XOAUTH2 and OAUTHBEARER are offered too, for tokens signed with those keys.
        self.oauth = oauth
        if oauth is not None:
            auth_mechanisms += " xoauth2 oauthbearer"
        self.password = password
        self.auth_mechanisms = auth_mechanisms
        self.host = host
        self._fixed_port = port
        self.port = port or 0
        self.tls = tls
        self.tls_port: int | None = None
        self.separator = separator
        self.base_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._instance = f"mailhub-{uuid.uuid4().hex[:8]}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        binary = require_binary(DOVECOT, "dovecot-imapd")
        if self.tls is not None:
            self._check_tls_readable()
        started = time.monotonic()
        for attempt in range(3):
            # A restart keeps the port (clients reconnect to the same address), but not the
            # mail: stop() deletes the server's directory.
            self.port = self.port or free_port(self.host)
            if self.tls is not None:
                self.tls_port = self.tls_port or free_port(self.host)
            self.base_dir = world_readable_tempdir("mailhub-dovecot-")
            config = self._write_config()
            self._process = spawn(
                [binary, "-F", "-c", str(config)],
                output=self.base_dir / "stderr.log",
                cwd=self.base_dir,
                # The other processes exit on their own once the master is gone.
                death_signal="KILL",
            )
            register_running(self)
            try:
                wait_for_port(self.host, self.port, process=self._process)
                if self.tls_port is not None:
                    wait_for_port(self.host, self.tls_port, process=self._process)
            except (ServerStartError, TimeoutError) as exc:
                log = self.log_text()
                self.stop()
                # Another process may have taken a port between free_port() and the bind.
                retry = self._fixed_port is None or self.tls is not None
                if "Address already in use" in log and retry and attempt < 2:
                    if self._fixed_port is None:
                        self.port = 0
                    self.tls_port = None
                    continue
                raise ServerStartError(f"Dovecot did not start: {exc}\n{log[-4000:]}") from exc
            self.startup_seconds = time.monotonic() - started
            return

    def stop(self) -> None:
        self._kill()
        self._cleanup()

    def _kill(self) -> None:
        if self._process is not None:
            # Not SIGTERM: Dovecot's graceful shutdown takes ~1 s, and up to 6 s when a login
            # process is still handshaking with the stats service it is killing. Nothing of the
            # server's state is kept, so kill the whole process group at once.
            kill_group(self._process)
            self._process = None
        unregister_running(self)

    def _cleanup(self) -> None:
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _write_config(self) -> Path:
        assert self.base_dir is not None
        for sub in ("run", "state", "home"):
            (self.base_dir / sub).mkdir(exist_ok=True)
        if is_root():
            # Dovecot's own accounts (created by the Debian package) run auth/login; the mail
            # processes run as `dovecot` too, which must therefore own the homes.
            internal_user, internal_group, login_user = "dovecot", "dovecot", "dovenull"
            mail_uid, mail_gid = user_ids("dovecot")
            user_ids(login_user)  # fail early (KeyError) if the package didn't create it
        else:
            # An unprivileged Dovecot can't switch users: everything runs as ourselves.
            internal_user, internal_group, mail_uid, mail_gid = current_user()
            login_user = internal_user
        home = self.base_dir / "home"
        if is_root():
            os.chown(home, mail_uid, mail_gid)
        if self.tls is None:
            tls_summary, ssl_settings, imaps_listener = "no TLS", _NO_TLS, _NO_IMAPS
        else:
            tls_summary = "STARTTLS on the plain port, implicit TLS on the imaps one"
            ssl_settings = _TLS.format(cert=self.tls.cert_file, key=self.tls.key_file)
            imaps_listener = _IMAPS.format(host=self.host, port=self.tls_port)
        oauth2_passdb = static_mechanisms = ""
        if self.oauth is not None:
            keys = self.base_dir / "oauth2-keys"
            self.oauth.write_key_dict(keys)
            (self.base_dir / "dovecot-oauth2.conf.ext").write_text(
                _OAUTH2_CONFIG.format(
                    keys=keys,
                    username_claim=self.oauth.username_claim,
                    issuer=self.oauth.issuer,
                    audience=self.oauth.audience,
                )
            )
            oauth2_passdb = _OAUTH2_PASSDB.format(base=self.base_dir)
            static_mechanisms = _STATIC_MECHANISMS
        config = self.base_dir / "dovecot.conf"
        config.write_text(
            _CONFIG.format(
                tls_summary=tls_summary,
                ssl_settings=ssl_settings,
                imaps_listener=imaps_listener,
                host=self.host,
                port=self.port,
                base=self.base_dir,
                instance=self._instance,
                internal_user=internal_user,
                internal_group=internal_group,
                login_user=login_user,
                mail_uid=mail_uid,
                mail_gid=mail_gid,
                separator=self.separator,
                password=self.password,
                auth_mechanisms=self.auth_mechanisms,
                oauth2_passdb=oauth2_passdb,
                static_mechanisms=static_mechanisms,
            )
        )
        return config

    def _check_tls_readable(self) -> None:
        """Fail early, with a clear message, if Dovecot can't read the certificate or the key.

        `ssl_key = <file` is read by Dovecot's config process, which runs as the user that
        started Dovecot (root, or ourselves when unprivileged); the login processes (dovenull)
        get the key from it over the config socket, so the key may stay private (0600).
        """
        assert self.tls is not None
        for path in (self.tls.cert_file, self.tls.key_file):
            if not os.access(path, os.R_OK):
                raise ServerStartError(f"Dovecot can't read its TLS file {path}")

    def log_text(self) -> str:
        """Dovecot's log plus what the master printed before its log service ran."""
        if self.base_dir is None:
            return ""
        return tail(self.base_dir / "stderr.log", 200) + "\n" + tail(self.base_dir / "dovecot.log", 200)

    # -- accounts and mailbox helpers ----------------------------------------------------------

    def new_account(self) -> str:
        """A username nobody used yet: its mailbox starts empty (INBOX only)."""
        return f"user-{uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def client(self, username: str, password: str = PASSWORD, timeout: float = 10.0) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient, logged out afterwards."""
        imap = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        try:
            imap.login(username, password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def append(
        self,
        username: str,
        raw: bytes,
        folder: str = "INBOX",
        flags: Iterable[bytes | str] = (),
        msg_time: dt.datetime | None = None,
    ) -> int:
        """APPEND `raw` verbatim and return its UID."""
        with self.client(username) as imap:
            response = imap.append(folder, raw, tuple(flags), msg_time)
            match = _APPENDUID.search(response or b"")
            if match:
                return int(match.group(2))
            # No UIDPLUS answer (Dovecot always sends one): the newest message is ours.
            imap.select_folder(folder, readonly=True)
            return max(imap.search(["ALL"]))

    def create_folder(self, username: str, name: str) -> None:
        with self.client(username) as imap:
            imap.create_folder(name)
            imap.subscribe_folder(name)

    def folders(self, username: str) -> list[str]:
        with self.client(username) as imap:
            return [name for _flags, _sep, name in imap.list_folders()]

    def uidvalidity(self, username: str, folder: str = "INBOX") -> int:
        with self.client(username) as imap:
            return int(imap.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def flags(self, username: str, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """Stored flags by UID, read without changing them.

        \\Recent is left out: it is a per-session flag, so it would differ between two reads.
        """
        with self.client(username) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["ALL"])
            if not uids:
                return {}
            fetched = imap.get_flags(uids)
        return {uid: tuple(flag for flag in flags if flag != RECENT) for uid, flags in fetched.items()}

    def messages(self, username: str, folder: str = "INBOX") -> dict[int, bytes]:
        """Raw messages by UID, fetched with BODY.PEEK[] so \\Seen stays unset."""
        with self.client(username) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["ALL"])
            if not uids:
                return {}
            fetched = imap.fetch(uids, [b"BODY.PEEK[]"])
        return {uid: data[b"BODY[]"] for uid, data in fetched.items()}

    def recreate_folder(self, username: str, name: str) -> int:
        """Replace a folder by a new empty one with another UIDVALIDITY; return the new value.

        UIDs of the new folder start again at 1, so a client that ignores UIDVALIDITY and asks
        for `UID last+1:*` misses messages, as it would against a real server.

        INBOX can't be deleted in IMAP. It is emptied over IMAP, then its UID list and indexes
        are removed so that Dovecot rebuilds them with a fresh UIDVALIDITY (taken from the
        account's dovecot-uidvalidity counter, so never reused) and UIDs from 1. No other session
        may have INBOX selected meanwhile.
        """
        with self.client(username) as imap:
            before = int(imap.folder_status(name, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
            if name.upper() == "INBOX":
                imap.select_folder(name)
                uids = imap.search(["ALL"])
                if uids:
                    imap.delete_messages(uids)
                # CLOSE expunges and closes the mailbox now, so that this session won't write
                # INBOX's index any more while it is removed below.
                imap.close_folder()
            else:
                imap.delete_folder(name)
                imap.create_folder(name)
                imap.subscribe_folder(name)
        if name.upper() == "INBOX":
            self._drop_inbox_index(username)
        after = self.uidvalidity(username, name)
        if after == before:
            raise AssertionError(f"UIDVALIDITY of {name!r} did not change ({before})")
        return after

    def _drop_inbox_index(self, username: str) -> None:
        assert self.base_dir is not None
        maildir = self.base_dir / "home" / username / "Maildir"
        # The mailbox list index caches INBOX's STATUS (UIDVALIDITY included): drop it too.
        for pattern in ("dovecot-uidlist", "dovecot.index*", "dovecot.list.index*"):
            for path in maildir.glob(pattern):
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ImapAccount:
    """One fresh account on a DovecotServer, with the server helpers bound to it."""

    server: DovecotServer
    username: str
    password: str = PASSWORD

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, timeout: float = 10.0) -> contextlib.AbstractContextManager[IMAPClient]:
        return self.server.client(self.username, self.password, timeout)

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Iterable[bytes | str] = (),
        msg_time: dt.datetime | None = None,
    ) -> int:
        return self.server.append(self.username, raw, folder, flags, msg_time)

    def create_folder(self, name: str) -> None:
        self.server.create_folder(self.username, name)

    def recreate_folder(self, name: str) -> int:
        return self.server.recreate_folder(self.username, name)

    def folders(self) -> list[str]:
        return self.server.folders(self.username)

    def uidvalidity(self, folder: str = "INBOX") -> int:
        return self.server.uidvalidity(self.username, folder)

    def flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        return self.server.flags(self.username, folder)

    def messages(self, folder: str = "INBOX") -> dict[int, bytes]:
        return self.server.messages(self.username, folder)
