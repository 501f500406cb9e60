"""Whom a webhook signature is trusted from: the default roots, the AIA allow-list and the chain
rules (shared.partner_center._trust; reference: dataverse-push-and-webhook-trust §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sandbox.partner_center import SigningAuthority
from shared.partner_center import (
    AZURE_ROOT_SHA256_BY_NAME,
    ISSUER_LOCATIONS,
    SignatureError,
    default_trusted_roots,
    describe_chain,
    verify_certificate_chain,
)
from shared.partner_center._trust import ca_issuers_urls, check_issuer_url

# SHA-1 thumbprints of the root CAs on Microsoft's "Azure Certificate Authority details" page
# (learn.microsoft.com/azure/security/fundamentals/azure-ca-details), by name.
AZURE_PAGE_SHA1_BY_NAME = {
    "DigiCert Global Root G2": "df3c24f9bfd666761b268073fe06d1cc8d4f82a4",
    "DigiCert Global Root G3": "7e04de896a3e666d00e687d33ffad93be83d349e",
    "Microsoft ECC Root Certificate Authority 2017": "999a64c37ff47d9fab95f14769891460eec4c3c5",
    "Microsoft RSA Root Certificate Authority 2017": "73a5e64a3bff8316ff0edccc618a906e4eae4d74",
}
BASE = "https://pc.test"


def _common_name(certificate: x509.Certificate) -> str:
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_default_roots_are_exactly_microsofts_azure_roots_from_the_mozilla_bundle() -> None:
    """The Azure CA details page lists DigiCert Global Root CA, G2, G3 and Microsoft's ECC and
    RSA 2017 roots; the Mozilla bundle (certifi) carries G2, G3 and both Microsoft roots
    (reference §2). Selected by SHA-256, each is the certificate whose SHA-1 Microsoft lists."""
    roots = default_trusted_roots()

    # SHA-1 only to compare with the thumbprints Microsoft publishes, never to trust.
    thumbprint = hashes.SHA1()  # noqa: S303
    assert {_common_name(r): r.fingerprint(thumbprint).hex() for r in roots} == (
        AZURE_PAGE_SHA1_BY_NAME
    )
    assert {_common_name(r) for r in roots} == set(AZURE_ROOT_SHA256_BY_NAME)
    assert all(r.subject == r.issuer for r in roots)


def test_default_roots_fail_closed_on_a_bundle_without_them() -> None:
    """Reference §2: "a sensible default, fail-closed" — a bundle lacking every listed root
    leaves nothing trusted, and says so."""
    test_root = SigningAuthority.generate(key_size=1024).root_pem

    with pytest.raises(SignatureError, match="no Microsoft or DigiCert root"):
        default_trusted_roots(test_root)
    bundle = Path(certifi.where()).read_bytes()
    assert len(default_trusted_roots(bundle + test_root)) == len(AZURE_PAGE_SHA1_BY_NAME)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        # The locations Microsoft's Azure CA details page names for its and DigiCert's CAs.
        ("http://www.microsoft.com/pkiops/certs/Microsoft%20Azure%20RSA%20TLS%20CA.crt", True),
        ("http://caissuers.microsoft.com/pki/issuing.crt", True),
        ("http://cacerts.digicert.com/DigiCertGlobalRootG2.crt", True),
        ("https://cacerts.digicert.com/DigiCertGlobalRootG2.crt", True),
        ("http://www.microsoft.com/other/issuing.crt", False),
        ("http://www.microsoft.com/pkiops/../other/issuing.crt", False),
        ("http://evil.example.net/pkiops/issuing.crt", False),
        ("http://cacerts.digicert.com.evil.example.net/x.crt", False),
        ("http://user@cacerts.digicert.com/x.crt", False),
        ("http://cacerts.digicert.com:8080/x.crt", False),
        ("ftp://cacerts.digicert.com/x.crt", False),
        ("ldap://cacerts.digicert.com/x.crt", False),
    ],
)
def test_intermediates_are_fetched_only_from_microsoft_and_digicert_pki(
    url: str, allowed: bool
) -> None:
    """Reference §2: intermediates fetched only from allow-listed PKI hosts named in the leaf's
    AIA (www.microsoft.com/pkiops/, caissuers.microsoft.com, cacerts.digicert.com)."""
    if allowed:
        check_issuer_url(url, allowed_locations=ISSUER_LOCATIONS)
    else:
        with pytest.raises(SignatureError):
            check_issuer_url(url, allowed_locations=ISSUER_LOCATIONS)


def test_emulator_location_with_a_port_is_allowed_only_when_listed() -> None:
    """The sandbox adds its emulator's own PKI location; nothing else allows it."""
    url = "http://127.0.0.1:7101/_emulator/pki/intermediate.cer"

    check_issuer_url(url, allowed_locations=["127.0.0.1:7101/_emulator/pki/"])
    for locations in (ISSUER_LOCATIONS, ["127.0.0.1/_emulator/pki/"], ["127.0.0.1:7101/other/"]):
        with pytest.raises(SignatureError, match="not allow-listed"):
            check_issuer_url(url, allowed_locations=locations)


def test_emulator_leaf_names_its_intermediate_in_aia_and_chains_through_it() -> None:
    """Like Partner Center's leaf (reference §2), the emulator's names its issuer only in its AIA
    caIssuers URL; given that issuer the chain leads to the (injected) root."""
    signing = SigningAuthority.generate()
    leaf = signing.leaf_for(BASE)

    assert ca_issuers_urls(leaf) == [f"{BASE}/_emulator/pki/intermediate.cer"]
    with pytest.raises(SignatureError, match="not trusted"):
        verify_certificate_chain(leaf, trusted_roots=[signing.root_pem])
    chain = verify_certificate_chain(
        leaf, trusted_roots=[signing.root_pem], intermediates=[signing.intermediate_der]
    )
    assert [link.issuer for link in describe_chain(chain)] == [
        signing.intermediate_certificate.subject.rfc4514_string(),
        signing.root_certificate.subject.rfc4514_string(),
        signing.root_certificate.subject.rfc4514_string(),
    ]


def _issue(
    issuer: SigningAuthority,
    *,
    ca: bool,
    key_usage: x509.KeyUsage,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
        .issuer_name(issuer.intermediate_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.intermediate_key.public_key()
            ),
            critical=False,
        )
        .sign(issuer.intermediate_key, hashes.SHA256())
    )
    return certificate, key


def _usage(*, digital_signature: bool, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature, False, True, False, False, key_cert_sign, False, False, False
    )


def test_leaf_without_digital_signature_or_that_is_a_ca_is_refused() -> None:
    """Microsoft's sample verifier leaves certificate policy to the platform's chain build;
    ours asks of the leaf what a signing key needs: digitalSignature, and no CA (reference §2:
    key usage)."""
    signing = SigningAuthority.generate()
    roots, intermediates = [signing.root_pem], [signing.intermediate_der]
    encipher_only, _ = _issue(
        signing, ca=False, key_usage=_usage(digital_signature=False, key_cert_sign=False)
    )
    a_ca, _ = _issue(signing, ca=True, key_usage=_usage(digital_signature=True, key_cert_sign=True))

    with pytest.raises(SignatureError, match="digitalSignature"):
        verify_certificate_chain(encipher_only, trusted_roots=roots, intermediates=intermediates)
    with pytest.raises(SignatureError, match="CA certificate"):
        verify_certificate_chain(a_ca, trusted_roots=roots, intermediates=intermediates)


def test_an_issuer_that_is_not_a_ca_breaks_the_chain() -> None:
    """Issuers must be CAs with keyCertSign (the Web PKI CA profile the platform's chain build
    applies in Microsoft's sample verifier, reference §2)."""
    signing = SigningAuthority.generate()
    not_a_ca, not_a_ca_key = _issue(
        signing, ca=False, key_usage=_usage(digital_signature=True, key_cert_sign=False)
    )
    now = datetime.now(UTC)
    below = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "below")]))
        .issuer_name(not_a_ca.subject)
        .public_key(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(_usage(digital_signature=True, key_cert_sign=False), critical=True)
        .sign(not_a_ca_key, hashes.SHA256())
    )

    with pytest.raises(SignatureError, match="not trusted"):
        verify_certificate_chain(
            below,
            trusted_roots=[signing.root_pem],
            intermediates=[not_a_ca, signing.intermediate_der],
        )
