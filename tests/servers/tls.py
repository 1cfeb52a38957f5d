"""Throw-away certificates for the TLS tests: a private CA, a server certificate it signed, and
an unrelated CA that must not be trusted.

Like a company's mail server with a certificate from its own CA: the server certificate is
valid for 127.0.0.1 (IP SAN) and localhost (DNS SAN), and `cert_file` is the full chain (leaf,
then the CA), so a client that does not trust the CA reports "self-signed certificate in
certificate chain". `wrong_host_cert_file` is signed by the same CA but names another host, to
test hostname checking.

The files are written to a world-readable temp dir (certificates 0644, keys 0600), which
Dovecot's unprivileged processes can traverse.
`session_tls_files()` generates them once per process (RSA key generation takes a moment) and
deletes them at exit.
"""

import atexit
import datetime as dt
import ipaddress
import shutil
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .common import LOCALHOST, world_readable_tempdir

SERVER_NAMES = (LOCALHOST, "localhost")
WRONG_HOST = "mail.other.test"


@dataclass(frozen=True)
class TlsFiles:
    directory: Path
    ca_file: Path  # PEM of the CA that signed cert_file: what MAILHUB_TLS_CA_FILE points to
    cert_file: Path  # PEM chain: server certificate for 127.0.0.1/localhost, then the CA
    key_file: Path  # PEM private key of cert_file (unencrypted)
    other_ca_file: Path  # PEM of an unrelated CA: trusting only it must reject cert_file
    wrong_host_cert_file: Path  # signed by ca_file, valid for WRONG_HOST only (chain as above)
    wrong_host_key_file: Path

    def server_context(self, *, wrong_host: bool = False) -> ssl.SSLContext:
        """A server-side SSLContext presenting the certificate (for in-process servers)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if wrong_host:
            context.load_cert_chain(self.wrong_host_cert_file, self.wrong_host_key_file)
        else:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the CA (for test helpers talking TLS)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailhub tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _validity(builder).sign(key, hashes.SHA256()), key


def _make_server_cert(
    names: tuple[str, ...], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    return _validity(builder).sign(ca_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def generate_tls_files(directory: Path | None = None) -> TlsFiles:
    """Generate the CAs and server certificates into `directory` (a new temp dir by default)."""
    directory = directory or world_readable_tempdir("mailhub-tls-")
    ca, ca_key = _make_ca("mailhub test CA")
    other_ca, _other_key = _make_ca("unrelated test CA")
    cert, key = _make_server_cert(SERVER_NAMES, ca, ca_key)
    wrong_cert, wrong_key = _make_server_cert((WRONG_HOST,), ca, ca_key)
    private = serialization.PrivateFormat.PKCS8
    encoding = serialization.Encoding.PEM
    no_password = serialization.NoEncryption()
    return TlsFiles(
        directory=directory,
        ca_file=_write(directory / "ca.pem", _pem(ca)),
        cert_file=_write(directory / "server-chain.pem", _pem(cert) + _pem(ca)),
        # Private keys stay 0600: Dovecot's config process reads them as the user that started
        # it (see DovecotServer._check_tls_readable), the login processes never open them.
        key_file=_write(directory / "server.key", key.private_bytes(encoding, private, no_password), 0o600),
        other_ca_file=_write(directory / "other-ca.pem", _pem(other_ca)),
        wrong_host_cert_file=_write(directory / "wrong-host-chain.pem", _pem(wrong_cert) + _pem(ca)),
        wrong_host_key_file=_write(
            directory / "wrong-host.key", wrong_key.private_bytes(encoding, private, no_password), 0o600
        ),
    )


_session_files: TlsFiles | None = None
_session_lock = threading.Lock()


def session_tls_files() -> TlsFiles:
    """The process's TlsFiles, generated on first use and deleted at interpreter exit."""
    global _session_files
    with _session_lock:
        if _session_files is None:
            _session_files = generate_tls_files()
            atexit.register(shutil.rmtree, _session_files.directory, ignore_errors=True)
        return _session_files
