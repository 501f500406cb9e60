"""A fake Azure Key Vault for Microsoft's own client (``azure-keyvault-secrets``), over TLS.

The Key Vault SDK only talks https to ``https://<vault>.vault.azure.net`` and checks that the
authentication challenge names that domain, so the fake is served as the vault itself: a
uvicorn server on a free port of 127.0.0.1 with a certificate for ``*.vault.azure.net`` from a
CA made at test time, reached through an aiohttp resolver that sends every Key Vault host name
there (any other name fails to resolve: no request can reach a real host). The SDK gets it as
an azure-core ``AioHttpTransport`` (``transport=``), the identity as a static credential.

What the fake does is what the service documents: a request without a bearer token gets 401
with a ``WWW-Authenticate`` challenge, ``PUT /secrets/{name}`` stores a new version, ``GET
/secrets/{name}[/{version}]`` reads one (404 ``SecretNotFound`` otherwise).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import AioHttpTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.settings import KEY_VAULT_DNS_SUFFIXES
from tests.server_thread import ServerThread

TOKEN = "kv-token"
CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001"'
    ', resource="https://vault.azure.net"'
)


class StaticCredential:
    """An ``AsyncTokenCredential`` with a fixed token, recording the scopes asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[str] = []
        self.closed = False

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, 2_000_000_000)

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass
class FakeKeyVault:
    """The vault's secrets (name → versions, newest last) and every authorised request."""

    secrets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (version, value)
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None  # answer every authorised request with this status instead

    def put(self, name: str, value: str) -> str:
        version = uuid.uuid4().hex
        self.secrets.setdefault(name, []).append((version, value))
        return version

    def app(self) -> Starlette:
        async def secret(request: Request) -> JSONResponse:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return JSONResponse(
                    {"error": {"code": "Unauthorized", "message": "AKV10000"}},
                    status_code=401,
                    headers={"WWW-Authenticate": CHALLENGE},
                )
            name = request.path_params["name"]
            body = await request.body()
            self.requests.append(
                {
                    "method": request.method,
                    "host": request.headers.get("host"),
                    "path": request.url.path,
                    "api": request.query_params.get("api-version"),
                    "body": body,
                }
            )
            if self.status is not None:
                error = {"code": "Forbidden", "message": "Caller is not authorized"}
                return JSONResponse({"error": error}, status_code=self.status)
            base = f"https://{request.headers.get('host')}/secrets/{name}"
            if request.method == "PUT":
                sent = await request.json()
                version = self.put(name, sent["value"])
                return JSONResponse(
                    {
                        "value": sent["value"],
                        "contentType": sent.get("contentType"),
                        "id": f"{base}/{version}",
                        "attributes": {"enabled": True},
                    }
                )
            wanted = request.path_params.get("version") or None
            versions = self.secrets.get(name, [])
            found = [v for v in versions if wanted in (None, v[0])]
            if not found:
                error = {"code": "SecretNotFound", "message": f"A secret with (name/id) {name}"}
                return JSONResponse({"error": error}, status_code=404)
            version, value = found[-1]
            return JSONResponse(
                {"value": value, "id": f"{base}/{version}", "attributes": {"enabled": True}}
            )

        return Starlette(
            routes=[
                Route("/secrets/{name}", secret, methods=["GET", "PUT"]),
                Route("/secrets/{name}/", secret, methods=["GET"]),
                Route("/secrets/{name}/{version}", secret, methods=["GET"]),
            ]
        )


class _VaultResolver(AbstractResolver):
    """Every Key Vault host name is the fake's port on 127.0.0.1; nothing else resolves."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not host.lower().endswith(KEY_VAULT_DNS_SUFFIXES):
            raise OSError(f"the test resolver knows only Key Vault hosts, not {host}")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


class KeyVaultServer:
    """The fake vault served over TLS; ``transport()`` gives a client's way to it."""

    def __init__(self, folder: Path) -> None:
        self.vault = FakeKeyVault()
        self.ca_file, cert, key = _certificates(folder)
        self._server = ServerThread(self.vault.app(), tls=(cert, key))
        self.port = 0

    def __enter__(self) -> KeyVaultServer:
        self.port = int(self._server.start().rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def reset(self) -> KeyVaultServer:
        """No secret, no request recorded, answers as the service does."""
        self.vault.secrets.clear()
        self.vault.requests.clear()
        self.vault.status = None
        return self

    def transport(self) -> AioHttpTransport:
        """An azure-core transport to the fake (call it inside the event loop that uses it)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connector = aiohttp.TCPConnector(resolver=_VaultResolver(self.port), ssl=context)
        return AioHttpTransport(session=aiohttp.ClientSession(connector=connector))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a ``*.vault.azure.net`` server certificate it signed (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cosell test Key Vault CA")])

    def certificate(subject: x509.Name, public: Any, *, ca: bool) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
        )

    ca = (
        certificate(ca_name, ca_key.public_key(), ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "*.vault.azure.net")]),
            key.public_key(),
            ca=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.vault.azure.net")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = folder / "kv-ca.pem", folder / "kv-server.pem", folder / "kv-key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files
