"""TLS for every gRPC link (issue 17): mutual TLS between cluster members, from a CA made by
`sixfold certs init DIR`.

Plaintext stays the default (a local cluster on loopback). With SIXFOLD_TLS_DIR set, every
server this process starts listens only with TLS and asks each caller for a certificate the
CA signed, and every channel it opens speaks TLS, checks the server's certificate against
the CA and presents its own: SIXFOLD_TLS_NAME names which (a member's name, or "client",
the default, for tools and the CLI). `sixfold up --tls` sets both for each process.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from sixfold.core.errors import SixfoldError

TLS_DIR_VARIABLE = "SIXFOLD_TLS_DIR"
TLS_NAME_VARIABLE = "SIXFOLD_TLS_NAME"
TLS_VARIABLES = (TLS_DIR_VARIABLE, TLS_NAME_VARIABLE)
TOKEN_VARIABLE = "SIXFOLD_TOKEN"  # a client's bearer token (sixfold/auth.py)
CLIENT_NAME = "client"  # the certificate tools, the CLI and the DB-API client present
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_DAYS_DEFAULT = 365
# Every certificate names these too: members reach each other on loopback in the process
# cluster, and by their names (a1, writer, ...) in containers.
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


class TlsError(SixfoldError):
    """TLS is asked for but cannot be set up: a file missing or unreadable."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: bytes
    cert: bytes
    key: bytes


def cert_file(name: str) -> str:
    return f"{name}.pem"


def key_file(name: str) -> str:
    return f"{name}-key.pem"


@functools.cache
def _load(directory: str, name: str) -> TlsFiles:
    root = Path(directory)
    paths = [root / CA_CERT_FILE, root / cert_file(name), root / key_file(name)]
    try:
        ca, cert, key = (p.read_bytes() for p in paths)
    except OSError as exc:
        raise TlsError(
            f"{TLS_DIR_VARIABLE}={directory}: cannot read {exc.filename} ({exc.strerror}): "
            f"make the certificates with `sixfold certs init {directory}`"
        ) from None
    return TlsFiles(ca, cert, key)


def _own_name() -> str:
    """Whose certificate this process presents (SIXFOLD_TLS_NAME; a tool's by default)."""
    return os.environ.get(TLS_NAME_VARIABLE, "") or CLIENT_NAME


def tls_files() -> TlsFiles | None:
    """This process's CA, certificate and key, or None when TLS is off."""
    directory = os.environ.get(TLS_DIR_VARIABLE, "")
    if not directory:
        return None
    return _load(directory, _own_name())


def member_name() -> str | None:
    """The cluster member this process is by its certificate (SIXFOLD_TLS_NAME), None for
    any other (CLIENT_NAME, a tool's; a name of its own) or with TLS off: framed streams
    under TLS are for members, as nodes check (storage_node/frame_server.py)."""
    from sixfold.cluster import MEMBER_NAMES  # here: cluster's module needs this one

    if not os.environ.get(TLS_DIR_VARIABLE, ""):
        return None
    name = _own_name()
    return name if name in MEMBER_NAMES else None


def server_ssl_context() -> ssl.SSLContext | None:
    """For a plain-socket listener (a node's framed streams, sixfold/frames.py): TLS with
    this process's certificate, and only callers whose certificate the CA signed, as gRPC's
    `add_port`; None when TLS is off."""
    return _own_ssl_context(server=True)


def client_ssl_context() -> ssl.SSLContext | None:
    """For a plain-socket connection to a member: the server's certificate checked against
    the CA and the host name dialled, this process's certificate presented; None when TLS
    is off."""
    return _own_ssl_context(server=False)


def _own_ssl_context(server: bool) -> ssl.SSLContext | None:
    if tls_files() is None:  # also checks the files are readable, with a message that says so
        return None
    return _ssl_context(os.environ[TLS_DIR_VARIABLE], _own_name(), server)


@functools.cache
def _ssl_context(directory: str, name: str, server: bool) -> ssl.SSLContext:
    root = Path(directory)
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    context = ssl.create_default_context(purpose, cafile=str(root / CA_CERT_FILE))
    context.load_cert_chain(root / cert_file(name), root / key_file(name))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the caller's certificate too
    # Python 3.13 checks X.509 strictly by default, which wants key identifiers our
    # certificates (and those of clusters made before) do not carry; gRPC's BoringSSL does
    # not ask for them. The chain, names, dates and usages are checked all the same.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return context


def peer_common_name(peercert: dict[str, object] | None) -> str:
    """The common name of a verified peer certificate, as `ssl` gives it ("" for none)."""
    for rdn in (peercert or {}).get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def aio_channel(address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.aio.Channel:
    """An asyncio channel to `address`: TLS with this process's certificate when TLS is on."""
    files = tls_files()
    if files is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, _channel_credentials(files), options=options)


def channel(address: str, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A blocking channel to `address`, as `aio_channel`."""
    files = tls_files()
    if files is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, _channel_credentials(files), options=options)


def _channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """This process's certificate, and its token (SIXFOLD_TOKEN) on every call if it has one
    (sixfold/auth.py)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=files.ca, private_key=files.key, certificate_chain=files.cert
    )
    token = os.environ.get(TOKEN_VARIABLE, "")
    if token:
        return grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return credentials


def add_port(server: grpc.aio.Server, address: str) -> int:
    """Listen on `address`: with TLS on, only TLS, and only callers whose certificate the
    CA signed (mutual TLS); else plaintext."""
    files = tls_files()
    if files is None:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(files.key, files.cert)], root_certificates=files.ca, require_client_auth=True
    )
    return server.add_secure_port(address, credentials)


# -- `sixfold certs init` ------------------------------------------------------------------------


def init_certs(
    directory: Path, names: Sequence[str], hosts: Sequence[str] = (), days: int = CERT_DAYS_DEFAULT
) -> list[str]:
    """A CA in `directory` (made once, kept after) and a certificate and key for each of
    `names` and for CLIENT_NAME, each naming itself, LOOPBACK_NAMES and `hosts`; the files
    written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)
    written: list[str] = []

    def write(name: str, data: bytes, secret: bool) -> None:
        path = directory / name
        path.write_bytes(data)
        if secret:
            path.chmod(0o600)
        written.append(name)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    if (directory / CA_CERT_FILE).exists() and (directory / CA_KEY_FILE).exists():
        ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        loaded = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sixfold CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=max(days, 10 * 365)))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(CA_KEY_FILE, pem_key(ca_key), secret=True)
        write(CA_CERT_FILE, ca_cert.public_bytes(serialization.Encoding.PEM), secret=False)

    for name in dict.fromkeys([*names, CLIENT_NAME]):
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in dict.fromkeys([name, *LOOPBACK_NAMES, *hosts]):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        write(key_file(name), pem_key(key), secret=True)
        write(cert_file(name), cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return written


def explain(details: str) -> str:
    """A hint to add to a failed connection's message where TLS on one side only, or two
    CAs, is the likely cause (gRPC says only "Socket closed" or "handshake failed")."""
    text = details.lower()
    if tls_files() is None and ("socket closed" in text or "connection reset" in text):
        return (
            " (this client speaks plaintext: if the cluster runs with TLS, give it the "
            f"certificates with {TLS_DIR_VARIABLE}, or --dir of the cluster)"
        )
    if tls_files() is not None and ("handshake" in text or "ssl" in text):
        return (
            " (TLS failed: the server may speak plaintext, or hold a certificate from another "
            f"CA than the one in {os.environ.get(TLS_DIR_VARIABLE)})"
        )
    return ""
