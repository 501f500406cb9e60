"""Checks of a Partner Center webhook callback's signature (reference: Partner Center §4.3,
dataverse-push-and-webhook-trust §2; SPEC 8).

The callback carries ``x-ms-signature`` (or ``Authorization``) = ``Signature <base64>``, an RSA
signature of the raw body with the hash named in ``x-ms-signature-algorithm``, and
``x-ms-certificate-url``, the signing certificate (the leaf only). Like Microsoft's sample
verifier we build the chain through each certificate's AIA ``caIssuers`` URL, check it leads to a
trusted root, that the leaf's issuer is ``O=Microsoft Corporation``, then the body signature
(``_trust`` says whom we trust and why). A missing certificate URL or algorithm header is a 400,
as in the sample; every other failure a 401.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ._trust import (
    ISSUER_LOCATIONS,
    MAX_CHAIN_DEPTH,
    SignatureError,
    SignatureHeaderMissing,
    ca_issuers_urls,
    check_issuer_url,
    issuer_organizations,
    validate_chain,
)

__all__ = [
    "MAX_CERTIFICATE_BYTES",
    "MICROSOFT_ORGANIZATION",
    "CertificateFetcher",
    "SignatureError",
    "SignatureHeaderMissing",
    "WebhookSignatureVerifier",
    "check_certificate_url",
    "load_certificate",
    "verify_body_signature",
    "verify_certificate_chain",
]

SIGNATURE_HEADER = "x-ms-signature"
CERTIFICATE_URL_HEADER = "x-ms-certificate-url"
ALGORITHM_HEADER = "x-ms-signature-algorithm"
# The header names the hash of an RSA PKCS#1 v1.5 signature (Microsoft's sample verifier hands
# it to the platform's RSA verify); Partner Center sends rsa-sha256.
HASH_BY_ALGORITHM: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "rsa-sha256": hashes.SHA256,
    "rsa-sha384": hashes.SHA384,
    "rsa-sha512": hashes.SHA512,
}
# Reference §2: the sample verifier checks that the issuer contains this organisation.
MICROSOFT_ORGANIZATION = "Microsoft Corporation"
# A certificate is a few KB; anything much larger is not one (and is not read further).
MAX_CERTIFICATE_BYTES = 64 * 1024
CERTIFICATE_FETCH_TIMEOUT_S = 5.0
MAX_CACHED_CERTIFICATES = 256

# GET a certificate by URL (the verifier has checked the URL against its allow-list first).
CertificateFetcher = Callable[[str], Awaitable[bytes]]


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from PEM or DER bytes (``.cer``/``.crt`` files come either way)."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise SignatureError("a certificate of the chain cannot be read") from None


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
    the certificate key's RSA signature of exactly ``body`` with ``algorithm``'s hash."""
    hash_algorithm = HASH_BY_ALGORITHM.get(algorithm.strip().lower())
    if hash_algorithm is None:
        raise SignatureError(f"unsupported signature algorithm {algorithm[:40]!r}")
    public_key = load_certificate(certificate).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("the signing certificate does not hold an RSA key")
    try:
        public_key.verify(_signature_bytes(signature), body, padding.PKCS1v15(), hash_algorithm())
    except InvalidSignature:
        raise SignatureError("the signature does not match the body") from None


def verify_certificate_chain(
    certificate: bytes | x509.Certificate,
    *,
    trusted_roots: Sequence[bytes | x509.Certificate],
    intermediates: Sequence[bytes | x509.Certificate] = (),
    now: datetime | None = None,
) -> list[x509.Certificate]:
    """The validated chain of ``certificate`` (through ``intermediates``) to one of
    ``trusted_roots``, or ``SignatureError``. No network: the intermediates are given."""
    return validate_chain(
        load_certificate(certificate),
        intermediates=[load_certificate(c) for c in intermediates],
        trusted_roots=[load_certificate(r) for r in trusted_roots],
        now=now or datetime.now(UTC),
    )


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
    """Verifies a callback: headers present, certificate URL allowed, chain (leaf → intermediates
    fetched from allow-listed AIA locations → trusted root) valid, the leaf's issuer organisation,
    then the body signature.

    ``issuer_locations``: where intermediates may be fetched ("host[:port]/path-prefix"; default
    Microsoft's and DigiCert's PKI, ``ISSUER_LOCATIONS``). Downloads are capped at
    ``max_certificate_bytes`` and ``fetch_timeout_s`` and cached per URL for ``cache_ttl_s``;
    the chain is validated on every call, so an expired certificate is refused even when cached.
    """

    def __init__(
        self,
        *,
        trusted_roots: Sequence[bytes | x509.Certificate],
        allowed_hosts: Collection[str],
        fetch_certificate: CertificateFetcher,
        issuer_locations: Collection[str] = ISSUER_LOCATIONS,
        issuer_organization: str | None = MICROSOFT_ORGANIZATION,
        allow_http_loopback: bool = False,
        max_certificate_bytes: int = MAX_CERTIFICATE_BYTES,
        fetch_timeout_s: float = CERTIFICATE_FETCH_TIMEOUT_S,
        cache_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        utcnow: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.trusted_roots = tuple(load_certificate(r) for r in trusted_roots)
        self.issuer_locations = tuple(issuer_locations)
        self._allowed_hosts = tuple(allowed_hosts)
        self._fetch = fetch_certificate
        self._issuer_organization = issuer_organization
        self._allow_http_loopback = allow_http_loopback
        self._max_bytes = max_certificate_bytes
        self._timeout_s = fetch_timeout_s
        self._ttl = cache_ttl_s
        self._clock = clock
        self._utcnow = utcnow
        self._cache: OrderedDict[str, tuple[float, x509.Certificate]] = OrderedDict()

    async def verify(self, body: bytes, headers: Mapping[str, str]) -> list[x509.Certificate]:
        """The validated chain of the signing certificate; raises ``SignatureError`` (its
        ``status`` is 400 for a missing certificate-URL or algorithm header, else 401)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER)
        if not signature:
            authorization = lowered.get("authorization", "")
            if authorization.lower().startswith("signature "):
                signature = authorization
        if not signature:
            raise SignatureError("the signature header is missing")
        url = lowered.get(CERTIFICATE_URL_HEADER)
        if not url:
            raise SignatureHeaderMissing(f"the {CERTIFICATE_URL_HEADER} header is missing")
        algorithm = lowered.get(ALGORITHM_HEADER)
        if not algorithm:
            raise SignatureHeaderMissing(f"the {ALGORITHM_HEADER} header is missing")
        chain = await self.certificate_chain(url)
        verify_body_signature(body, signature, chain[0], algorithm=algorithm)
        return chain

    async def certificate_chain(self, url: str) -> list[x509.Certificate]:
        """Download the certificate at ``url`` and its issuers; the validated chain to a root."""
        check_certificate_url(
            url, allowed_hosts=self._allowed_hosts, allow_http_loopback=self._allow_http_loopback
        )
        leaf = await self._certificate(url)
        chain = validate_chain(
            leaf,
            intermediates=await self._intermediates(leaf),
            trusted_roots=self.trusted_roots,
            now=self._utcnow(),
        )
        if self._issuer_organization is not None and self._issuer_organization not in (
            issuer_organizations(leaf)
        ):
            raise SignatureError(
                f"the signing certificate's issuer is not O={self._issuer_organization}"
            )
        return chain

    async def _intermediates(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """Walk the AIA ``caIssuers`` URLs up from ``leaf`` until a trusted root issued the
        last certificate (validation then decides whether the path holds)."""
        found: list[x509.Certificate] = []
        current = leaf
        for _ in range(MAX_CHAIN_DEPTH - 1):
            if self._issued_by_a_root(current) or current.issuer == current.subject:
                break
            urls = ca_issuers_urls(current)
            if not urls:
                break
            url = self._first_allowed(urls)
            issuer = await self._certificate(url)
            if issuer.subject != current.issuer:
                raise SignatureError("the certificate at an issuer URL is not the issuer")
            found.append(issuer)
            current = issuer
        return found

    def _first_allowed(self, urls: Sequence[str]) -> str:
        problem: SignatureError | None = None
        for url in urls:
            try:
                check_issuer_url(url, allowed_locations=self.issuer_locations)
            except SignatureError as exc:
                problem = problem or exc
            else:
                return url
        assert problem is not None
        raise problem

    def _issued_by_a_root(self, certificate: x509.Certificate) -> bool:
        for root in self.trusted_roots:
            if root.subject != certificate.issuer:
                continue
            try:
                certificate.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return True
        return False

    async def _certificate(self, url: str) -> x509.Certificate:
        cached = self._cache.get(url)
        if cached and cached[0] > self._clock():
            return cached[1]
        try:
            async with asyncio.timeout(self._timeout_s):
                data = await self._fetch(url)
        except TimeoutError:
            raise SignatureError(
                f"a certificate did not arrive within {self._timeout_s:g} s"
            ) from None
        if len(data) > self._max_bytes:
            raise SignatureError("a certificate download is too large")
        certificate = load_certificate(data)
        self._cache[url] = (self._clock() + self._ttl, certificate)
        self._cache.move_to_end(url)
        while len(self._cache) > MAX_CACHED_CERTIFICATES:
            self._cache.popitem(last=False)
        return certificate
