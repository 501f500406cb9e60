"""``cosell webhook test`` shows the chain of the signing certificate (issue 15; reference:
dataverse-push-and-webhook-trust §2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.settings import get_settings

from .conftest import Sandbox

HOOK = "/api/webhooks/partner-center"


def _test_event(cli_env: Sandbox, cosell: Any, *args: str) -> Any:
    url = f"{cli_env.receiver_url}{HOOK}?code=sandbox"
    assert cosell("webhook", "register", "--url", url).code == 0
    return cosell("webhook", "test", "--timeout", "10", "--interval", "0.05", *args)


def test_webhook_test_prints_the_chain_through_the_fetched_intermediate(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partner Center links only the leaf; Microsoft's sample verifier builds the chain through
    its AIA caIssuers URL (reference §2). The command shows that chain: subject, issuer,
    not-after and SHA-256 of each certificate, root last."""
    root = httpx.get(f"{cli_env.pc_url}/_emulator/certificates/root.pem").text
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    monkeypatch.setenv("WEBHOOK_TRUSTED_ROOTS", root)
    get_settings.cache_clear()

    ran = _test_event(cli_env, cosell, "--json")

    assert ran.code == 0, ran.out + ran.err
    certificate = ran.json()["certificate"]
    assert certificate["url"] == f"{cli_env.pc_url}/_emulator/certificates/signing.cer"
    assert certificate["trusted"] is True
    subjects = [link["subject"] for link in certificate["chain"]]
    assert len(subjects) == 3
    assert "Issuing CA" in subjects[1] and "Test Root CA" in subjects[2]
    assert all(len(link["sha256"]) == 64 and link["not_after"] for link in certificate["chain"])

    table = _test_event(cli_env, cosell)
    assert "Signing certificate chain" in table.out and "sha-256" in table.out


def test_webhook_test_shows_the_leaf_and_why_the_default_roots_refuse_it(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no WEBHOOK_TRUSTED_ROOTS the roots are Microsoft's and DigiCert's (reference §2), so
    the emulator's test chain is shown untrusted, with the reason; in verify mode that fails."""
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    get_settings.cache_clear()

    ran = _test_event(cli_env, cosell, "--json")

    assert ran.code == 0, ran.out + ran.err  # signature mode off: informative only
    certificate = ran.json()["certificate"]
    assert certificate["trusted"] is False
    assert "not trusted" in certificate["error"]
    [leaf] = certificate["chain"]
    assert "Issuing CA" in leaf["issuer"]

    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    get_settings.cache_clear()
    assert _test_event(cli_env, cosell).code == 1
