"""Checks of a Partner Center webhook callback's signature (reference §4.3, SPEC 8).

The callback carries ``x-ms-signature`` (or ``Authorization``) = ``Signature <base64>``, an
RSA-SHA256 signature of the raw body, and ``x-ms-certificate-url``, where the signing certificate
is. We accept the certificate only from allow-listed hosts and only when its chain leads to a
trusted root; certificates are cached per URL.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from shared.errors import CosellError

__all__ = [
    "CertificateFetcher",
    "SignatureError",
    "WebhookSignatureVerifier",
    "check_certificate_url",
    "load_certificate",
    "verify_body_signature",
    "verify_certificate_chain",
]

SIGNATURE_HEADER = "x-ms-signature"
CERTIFICATE_URL_HEADER = "x-ms-certificate-url"
ALGORITHM_HEADER = "x-ms-signature-algorithm"
SUPPORTED_ALGORITHMS = frozenset({"rsa-sha256"})
MAX_CHAIN_DEPTH = 5

CertificateFetcher = Callable[[str], Awaitable[bytes]]


class SignatureError(CosellError):
    """The callback's signature could not be verified; answer 401 and enqueue nothing."""


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM or DER bytes (``.cer`` files come either way)."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise SignatureError("the signing certificate cannot be read") from None


def _signature_bytes(value: str) -> bytes:
    text = value.strip()
    if text.lower().startswith("signature "):
        text = text[len("signature ") :].strip()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not valid base64") from None


def verify_body_signature(
    body: bytes,
    signature: str,
    certificate: bytes | x509.Certificate,
    *,
    algorithm: str = "rsa-sha256",
) -> None:
    """Raise ``SignatureError`` unless ``signature`` (``Signature <base64>`` or bare base64) is
    the certificate key's RSA-SHA256 signature of exactly ``body``."""
    if algorithm.lower() not in SUPPORTED_ALGORITHMS:
        raise SignatureError(f"unsupported signature algorithm {algorithm!r}")
    public_key = load_certificate(certificate).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("the signing certificate does not hold an RSA key")
    try:
        public_key.verify(_signature_bytes(signature), body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("the signature does not match the body") from None


def verify_certificate_chain(
    certificate: bytes | x509.Certificate,
    *,
    trusted_roots: Sequence[bytes | x509.Certificate],
    intermediates: Sequence[bytes | x509.Certificate] = (),
    now: datetime | None = None,
) -> None:
    """Raise ``SignatureError`` unless ``certificate`` chains (through ``intermediates``) to one
    of ``trusted_roots``, every link in its validity period and every issuer a CA."""
    moment = now or datetime.now(UTC)
    roots = [load_certificate(r) for r in trusted_roots]
    pool = [load_certificate(c) for c in intermediates] + roots
    current = load_certificate(certificate)
    for _ in range(MAX_CHAIN_DEPTH):
        _check_validity(current, moment)
        if any(current == root for root in roots):
            return
        issuer = next((c for c in pool if _issued(current, c)), None)
        if issuer is None:
            raise SignatureError("the signing certificate does not chain to a trusted root")
        if not _is_ca(issuer):
            raise SignatureError("an issuer in the certificate chain is not a CA")
        if any(issuer == root for root in roots):
            _check_validity(issuer, moment)
            return
        current = issuer
    raise SignatureError("the certificate chain is too long")


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject or child == issuer:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _check_validity(certificate: x509.Certificate, moment: datetime) -> None:
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureError("a certificate in the chain is expired or not yet valid")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_certificate_url(
    url: str, *, allowed_hosts: Collection[str], allow_http_loopback: bool = False
) -> None:
    """Raise ``SignatureError`` unless ``url`` is https (or http on loopback, for the sandbox,
    when allowed) on an allowed host. ``*.example.net`` in ``allowed_hosts`` allows subdomains."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise SignatureError("the certificate URL has no host")
    if parts.scheme != "https" and not (
        allow_http_loopback and parts.scheme == "http" and _is_loopback(host)
    ):
        raise SignatureError("the certificate URL must use https")
    for allowed in allowed_hosts:
        pattern = allowed.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return
    raise SignatureError(f"the certificate host {host!r} is not on the allow-list")


class WebhookSignatureVerifier:
    """Verifies a callback: headers present, certificate URL allowed, chain trusted, optional
    issuer organisation (the doc checks ``O=Microsoft Corporation``), body signature valid."""

    def __init__(
        self,
        *,
        trusted_roots: Sequence[bytes | x509.Certificate],
        allowed_hosts: Collection[str],
        fetch_certificate: CertificateFetcher,
        issuer_organization: str | None = None,
        allow_http_loopback: bool = False,
        cache_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._roots = [load_certificate(r) for r in trusted_roots]
        self._allowed_hosts = tuple(allowed_hosts)
        self._fetch = fetch_certificate
        self._issuer_organization = issuer_organization
        self._allow_http_loopback = allow_http_loopback
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, x509.Certificate]] = {}

    async def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER)
        if not signature:
            authorization = lowered.get("authorization", "")
            if authorization.lower().startswith("signature "):
                signature = authorization
        url = lowered.get(CERTIFICATE_URL_HEADER)
        algorithm = lowered.get(ALGORITHM_HEADER, "rsa-sha256")
        if not signature or not url:
            raise SignatureError("the signature or certificate URL header is missing")
        check_certificate_url(
            url, allowed_hosts=self._allowed_hosts, allow_http_loopback=self._allow_http_loopback
        )
        certificate = await self._certificate(url)
        verify_body_signature(body, signature, certificate, algorithm=algorithm)

    async def _certificate(self, url: str) -> x509.Certificate:
        cached = self._cache.get(url)
        if cached and cached[0] > self._clock():
            return cached[1]
        certificate = load_certificate(await self._fetch(url))
        verify_certificate_chain(certificate, trusted_roots=self._roots)
        if self._issuer_organization is not None:
            organizations = certificate.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
            if not any(self._issuer_organization in str(o.value) for o in organizations):
                raise SignatureError("the certificate issuer is not the expected organisation")
        self._cache[url] = (self._clock() + self._ttl, certificate)
        return certificate
