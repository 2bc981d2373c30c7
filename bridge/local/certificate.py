"""A certificate authority of the local stack's own, and a server certificate it signs for
127.0.0.1 and localhost: the Azure ML emulator serves HTTPS with it, as Azure does, and the
bridge's azure-ai-ml client trusts that authority alone (never the machine's trust store).

azure-ai-ml needs HTTPS for pipeline jobs: it looks the workspace up through a client that refuses
to send a bearer token over plain http. Keys are new on every start and never leave the work dir.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LIFETIME = timedelta(days=2)
_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class LocalCertificate:
    authority: Path  # the CA certificate a client trusts (PEM)
    certificate: Path  # the server's certificate (PEM)
    key: Path  # the server's private key (PEM)

    @classmethod
    def create(cls, folder: Path) -> LocalCertificate:
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bridge local stack CA")])
        ca = (
            _valid(x509.CertificateBuilder(), now)
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        leaf = (
            _valid(x509.CertificateBuilder(), now)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        made = cls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
        made.authority.write_bytes(ca.public_bytes(pem))
        made.certificate.write_bytes(leaf.public_bytes(pem))
        made.key.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        made.key.chmod(0o600)
        return made


def _valid(builder: x509.CertificateBuilder, now: datetime) -> x509.CertificateBuilder:
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + _LIFETIME)
    )
