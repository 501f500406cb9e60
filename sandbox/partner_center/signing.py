"""The emulator's signing chain, shaped like Partner Center's (reference: dataverse-push-and-
webhook-trust §2): a test root CA, an issuing CA under it, and the signing (leaf) certificate
whose key signs every webhook body (RSA-SHA256, like Partner Center's dispatcher, §4.3).

Partner Center links only the leaf; the receiver finds the issuing CA through the leaf's AIA
``caIssuers`` URL. So does ours: the leaf names ``<emulator>/_emulator/pki/intermediate.cer``,
which the emulator serves (DER). Since the emulator learns its own URL from the requests it gets,
a leaf is issued per base URL (same key, same issuer), on first use.

The issuing CA carries ``O=Microsoft Corporation`` because that is what receivers check on the
leaf's issuer (Microsoft's sample verifier); its common name and organisational unit say it is a
throw-away test CA, and its root is trusted only where a test or the sandbox passes it in.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

ALGORITHM = "rsa-sha256"
PKI_PATH = "/_emulator/pki"
INTERMEDIATE_PATH = f"{PKI_PATH}/intermediate.cer"
EMULATOR_ORGANIZATION = "Co-sell Sync Emulator (test only)"
ISSUER_ORGANIZATION = "Microsoft Corporation"


def _name(common_name: str, organization: str = EMULATOR_ORGANIZATION) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, EMULATOR_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _key_usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_certificate(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    *,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    path_length: int | None,
    now: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(sign_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class SigningAuthority:
    """Root CA → issuing CA → signing certificates (all throw-away, in memory).

    ``leaf_validity``: the leaf's not-before and not-after, relative to when it is issued (tests
    make an expired one with ``(-2 days, -1 day)``).
    """

    root_certificate: x509.Certificate
    intermediate_certificate: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)
    intermediate_key: rsa.RSAPrivateKey = field(repr=False)
    leaf_validity: tuple[timedelta, timedelta] = (timedelta(minutes=-5), timedelta(days=7))
    _leaves: dict[str, x509.Certificate] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def generate(
        cls,
        *,
        key_size: int = 2048,
        issuer_organization: str = ISSUER_ORGANIZATION,
        leaf_validity: tuple[timedelta, timedelta] = (timedelta(minutes=-5), timedelta(days=7)),
    ) -> SigningAuthority:
        now = datetime.now(UTC)
        root_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        root_name = _name("Co-sell Sync Emulator Test Root CA")
        root = _ca_certificate(
            root_name, root_key, issuer=root_name, issuer_key=root_key, path_length=1, now=now
        )
        intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        intermediate = _ca_certificate(
            _name("Co-sell Sync Emulator Issuing CA (not Microsoft)", issuer_organization),
            intermediate_key,
            issuer=root_name,
            issuer_key=root_key,
            path_length=0,
            now=now,
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        return cls(
            root_certificate=root,
            intermediate_certificate=intermediate,
            key=key,
            intermediate_key=intermediate_key,
            leaf_validity=leaf_validity,
        )

    def leaf_for(self, base_url: str) -> x509.Certificate:
        """The signing certificate whose AIA ``caIssuers`` URL is ``base_url``'s intermediate."""
        base = base_url.rstrip("/")
        with self._lock:
            leaf = self._leaves.get(base)
            if leaf is None:
                leaf = self._leaves[base] = self._issue_leaf(base + INTERMEDIATE_PATH)
        return leaf

    def _issue_leaf(self, issuer_url: str) -> x509.Certificate:
        now = datetime.now(UTC)
        not_before, not_after = self.leaf_validity
        issuer_public_key = self.intermediate_key.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(_name("pcnotifications-dispatch.emulator.invalid"))
            .issuer_name(self.intermediate_certificate.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before)
            .not_valid_after(now + not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(sign_certificates=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key),
                critical=False,
            )
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(issuer_url),
                        )
                    ]
                ),
                critical=False,
            )
            .sign(self.intermediate_key, hashes.SHA256())
        )

    def sign(self, body: bytes) -> str:
        """Base64 RSA-SHA256 (PKCS#1 v1.5) signature of ``body``."""
        signature = self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode("ascii")

    def leaf_der(self, base_url: str) -> bytes:
        return self.leaf_for(base_url).public_bytes(serialization.Encoding.DER)

    def leaf_pem(self, base_url: str) -> bytes:
        return self.leaf_for(base_url).public_bytes(serialization.Encoding.PEM)

    @property
    def intermediate_der(self) -> bytes:
        return self.intermediate_certificate.public_bytes(serialization.Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)
