"""TLS pieces shared by the IMAP and SMTP gateways: one verifying context per CA file, and
readable reasons for what went wrong.

Certificates are always verified, host name included, against the system CAs plus, if set, the
PEM bundle MAILHUB_TLS_CA_FILE (a company's private CA).
"""

from __future__ import annotations

import functools
import socket
import ssl
from enum import StrEnum


class Security(StrEnum):
    """How a gateway protects its connection (models.TransportSecurity offers the same values)."""

    SSL = "ssl"  # implicit TLS from the first byte (IMAPS 993, SMTPS 465; RFC 8314)
    STARTTLS = "starttls"  # plain connection upgraded before login (RFC 2595 / RFC 3207)
    NONE = "none"  # plain text: loopback or a trusted network only


# OpenSSL's reasons for a first "TLS record" that is no TLS at all: typically the plain-text
# greeting of a server that does not speak TLS on this port.
NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
        "UNKNOWN_PROTOCOL",
    }
)
# X509_V_ERR_* codes meaning "signed by no CA we trust" (not expired, not another host).
_UNTRUSTED_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})


class CaFileError(Exception):
    """MAILHUB_TLS_CA_FILE could not be loaded."""


@functools.lru_cache(maxsize=8)
def verifying_context(ca_file: str = "") -> ssl.SSLContext:
    """CERT_REQUIRED with host name checking: system CAs plus `ca_file`.

    Cached: building a context loads the system CA store (~70 ms here), which every IMAP and SMTP
    session paid before; an SSLContext is safe to share between connections and threads. Not
    create_default_context(cafile=...): given a cafile, it would skip the system CAs.
    """
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ValueError) as exc:
            raise CaFileError(
                f"TLS CA file {ca_file!r} (MAILHUB_TLS_CA_FILE) could not be loaded: {exc}"
            ) from exc
    return context


def certificate_problem(exc: ssl.SSLCertVerificationError, ca_file: str) -> str:
    reason = exc.verify_message or str(exc)
    if exc.verify_code in _UNTRUSTED_ISSUER_CODES and ca_file:
        reason += (
            f" (issuer not trusted: neither a system CA nor in the CA file {ca_file!r}, "
            "MAILHUB_TLS_CA_FILE; does it hold the CA that signed the server's certificate?)"
        )
    elif exc.verify_code in _UNTRUSTED_ISSUER_CODES:
        reason += (
            " (issuer not trusted: not a system CA; if the server's certificate comes from a "
            "private CA, set MAILHUB_TLS_CA_FILE to that CA's PEM file)"
        )
    return reason


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether host:port completes a TLS handshake (or fails it only on the certificate).

    Only asked after a plain-text connection got no greeting: an implicit-TLS port waits
    silently for the client's TLS hello. Nothing is sent after the handshake. System CAs
    suffice: a certificate failing verification still proves that TLS is spoken there.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            verifying_context().wrap_socket(sock, server_hostname=host),
        ):
            return True
    except ssl.SSLCertVerificationError:
        return True
    except OSError:  # ssl.SSLError included: no TLS there either
        return False
