"""Whom a Partner Center webhook signature is trusted from (reference: dataverse-push-and-webhook-
trust §2, SPEC 8).

Partner Center's docs say the event is signed "with a certificate that chains to the Microsoft
Root" and link only the leaf (``x-ms-certificate-url``); Microsoft's sample verifier lets the
platform build the chain, which fetches the intermediates named in each certificate's AIA
``caIssuers`` URL. We do the same, fail-closed:

* the roots are the Microsoft and DigiCert roots Microsoft lists for Azure, picked out of the
  Mozilla bundle (``certifi``) by SHA-256 fingerprint (``default_trusted_roots``), unless
  ``WEBHOOK_TRUSTED_ROOTS`` names others;
* an intermediate is fetched only from a URL under an allow-listed PKI location
  (``ISSUER_LOCATIONS``), never from wherever a certificate points;
* the path is validated by ``cryptography``'s verifier (signatures, validity dates, CA basic
  constraints and ``keyCertSign``, path length), plus ``digitalSignature`` on the leaf.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from shared.errors import CosellError

__all__ = [
    "AZURE_ROOT_SHA256_BY_NAME",
    "ISSUER_LOCATIONS",
    "ChainLink",
    "SignatureError",
    "SignatureHeaderMissing",
    "ca_issuers_urls",
    "check_issuer_url",
    "default_trusted_roots",
    "describe_chain",
    "fingerprint",
    "issuer_organizations",
    "validate_chain",
]


class SignatureError(CosellError):
    """The callback's signature could not be verified; answer ``status`` and enqueue nothing."""

    status = 401


class SignatureHeaderMissing(SignatureError):
    """``x-ms-certificate-url`` or ``x-ms-signature-algorithm`` is absent: a malformed request,
    400, as in Microsoft's sample verifier (reference §2; a missing signature stays 401)."""

    status = 400


# The root CAs of Microsoft's "Azure Certificate Authority details" page
# (learn.microsoft.com/azure/security/fundamentals/azure-ca-details, which gives SHA-1
# thumbprints) that the Mozilla bundle carries, by the SHA-256 fingerprint of Mozilla's CA list,
# checked against certifi 2026.10.19 (tests/partner_center/test_trust.py also checks each
# selected root's SHA-1 against the thumbprint on Microsoft's page). Not selectable: DigiCert
# Global Root CA (Mozilla no longer ships it) and Baltimore CyberTrust Root (expired 2025).
AZURE_ROOT_SHA256_BY_NAME: dict[str, str] = {
    "DigiCert Global Root G2": "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f",
    "DigiCert Global Root G3": "31ad6648f8104138c738f39ea4320133393e3a18cc02296ef97c2ac9ef6731d0",
    "Microsoft ECC Root Certificate Authority 2017": (
        "358df39d764af9e1b766e9c972df352ee15cfac227af6ad1d70e8e4a6edcba02"
    ),
    "Microsoft RSA Root Certificate Authority 2017": (
        "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0"
    ),
}

# Where Microsoft and DigiCert publish their intermediates (the Azure CA details page; reference
# §2): "host/path-prefix", http or https (AIA URLs are usually plain http; what they serve is
# trusted only once its signature chains to a root).
ISSUER_LOCATIONS: tuple[str, ...] = (
    "www.microsoft.com/pkiops/",
    "caissuers.microsoft.com/",
    "cacerts.digicert.com/",
)
MAX_CHAIN_DEPTH = 5  # leaf + at most 4 issuers: Microsoft's chains are leaf ← issuing CA ← root


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 fingerprint, lower-case hex (how Mozilla's CA list names roots)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def default_trusted_roots(bundle: bytes | None = None) -> tuple[x509.Certificate, ...]:
    """The roots of ``AZURE_ROOT_SHA256_BY_NAME`` found in ``bundle`` (PEM; default: certifi's
    Mozilla bundle). Raises ``SignatureError`` when none is there, so ``verify`` fails closed."""
    if bundle is None:
        import certifi

        with open(certifi.where(), "rb") as file:
            bundle = file.read()
    wanted = set(AZURE_ROOT_SHA256_BY_NAME.values())
    # Hash each block's DER before parsing: only the chosen few are parsed, so a certificate
    # of the bundle that some cryptography release refuses to load cannot break the default.
    roots = tuple(
        x509.load_der_x509_certificate(der)
        for der in _pem_blocks(bundle)
        if hashlib.sha256(der).hexdigest() in wanted
    )
    if not roots:
        raise SignatureError("no Microsoft or DigiCert root is in the CA bundle")
    return roots


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL
)


def _pem_blocks(bundle: bytes) -> list[bytes]:
    return [
        base64.b64decode(b"".join(m.group(1).split())) for m in _PEM_CERTIFICATE.finditer(bundle)
    ]


def ca_issuers_urls(certificate: x509.Certificate) -> list[str]:
    """The ``caIssuers`` URLs of the certificate's Authority Information Access extension."""
    try:
        access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in access.value
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def check_issuer_url(url: str, *, allowed_locations: Collection[str]) -> None:
    """Raise ``SignatureError`` unless ``url`` is http(s), without user info, under one of
    ``allowed_locations`` ("host[:port]/path-prefix"; no port means the scheme's own)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise SignatureError("an issuer certificate URL is not a plain http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise SignatureError("an issuer certificate URL has a bad port") from None
    host = parts.hostname.lower()
    path = unquote(parts.path)
    if ".." in path.split("/"):
        raise SignatureError("an issuer certificate URL climbs out of its folder")
    for location in allowed_locations:
        where, _, prefix = location.lower().partition("/")
        allowed_host, _, allowed_port = where.partition(":")
        if host != allowed_host or (str(port) if port else "") != allowed_port:
            continue
        if path.lower().startswith("/" + prefix):
            return
    raise SignatureError(f"the issuer certificate location {host}{path[:60]} is not allow-listed")


def _leaf_may_sign(policy: Policy, certificate: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("the signing certificate's key usage lacks digitalSignature")


def _leaf_is_no_ca(
    policy: Policy, certificate: x509.Certificate, constraints: x509.BasicConstraints | None
) -> None:
    if constraints is not None and constraints.ca:
        raise ValueError("the signing certificate is a CA certificate")


# The webhook leaf is no TLS peer: its subject and extended key usage are UNCERTAIN (reference
# §2), so the end-entity policy asks only what a signing key needs. Issuers keep the Web PKI
# CA profile (basic constraints, keyCertSign, path length), except the extended-key-usage
# match, which would tie them to a TLS role.
_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _leaf_may_sign)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _leaf_is_no_ca)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
)


def validate_chain(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    trusted_roots: Sequence[x509.Certificate],
    now: datetime,
) -> list[x509.Certificate]:
    """The validated path leaf → … → root, or ``SignatureError``."""
    if not trusted_roots:
        raise SignatureError("no trusted root is configured")
    verifier = (
        PolicyBuilder()
        .store(Store(list(trusted_roots)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except VerificationError as exc:
        raise SignatureError(f"the signing certificate is not trusted: {_reason(exc)}") from None


def _reason(exc: VerificationError) -> str:
    text = str(exc).removeprefix("validation failed: ")
    # cryptography names the certificate as its repr at the end; the subject is enough.
    return text.split(" (encountered processing", 1)[0][:200]


@dataclass(frozen=True)
class ChainLink:
    """One certificate of a chain as ``cosell webhook test`` shows it."""

    subject: str
    issuer: str
    not_after: datetime
    sha256: str


def describe_chain(chain: Sequence[x509.Certificate]) -> list[ChainLink]:
    return [
        ChainLink(
            subject=c.subject.rfc4514_string(),
            issuer=c.issuer.rfc4514_string(),
            not_after=c.not_valid_after_utc,
            sha256=fingerprint(c),
        )
        for c in chain
    ]


def issuer_organizations(certificate: x509.Certificate) -> list[str]:
    """The ``O=`` values of the certificate's issuer."""
    names = certificate.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return [str(a.value) for a in names]
