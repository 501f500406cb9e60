"""A second, independent client: Microsoft's ``PowerPlatform-Dataverse-Client`` (PyPI, pinned in
requirements-dev.txt) drives the emulator, unmodified, over real sockets.

Nobody on this project wrote that client, so where it and the emulator agree the emulator speaks
the Web API as Microsoft's own code expects it (issue 15; shared/reference
``dataverse-push-and-webhook-trust.md`` §4). The SDK refuses ``http://`` base URLs, so the
emulator is served over TLS on a port of 127.0.0.1 the OS picks, with a CA and a server
certificate made for this module (``cryptography``); ``REQUESTS_CA_BUNDLE`` makes ``requests``
trust that CA and nothing leaves the machine. The credential is a ``TokenCredential`` that
hands out the sandbox's bearer token: the SDK asks it for ``<base url>/.default``.

The requests each test causes were read from the installed SDK's source
(``PowerPlatform/Dataverse/data/_odata.py``, ``_odata_base.py``, ``_batch_base.py``).
"""

from __future__ import annotations

import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.config import DataverseConfig
from PowerPlatform.Dataverse.core.errors import HttpError

from sandbox.dataverse import Emulator, create_app, emulator_of
from tests.server_thread import ServerThread

TOKEN = "sandbox"


class SandboxCredential:
    """An azure-identity style ``TokenCredential`` (the protocol the SDK checks for) that
    answers every scope with the sandbox's token."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=2))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cosell test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


class TlsEmulator(ServerThread):
    """The emulator over TLS, with a certificate its own test CA issued."""

    def __init__(self, folder: Path) -> None:
        self.ca_file, cert_file, key_file = _write_certificates(folder)
        self.app = create_app(token=TOKEN, seed=5)
        super().__init__(self.app, tls=(cert_file, key_file))


@pytest.fixture(scope="module")
def tls_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsEmulator, str]]:
    served = TlsEmulator(tmp_path_factory.mktemp("tls"))
    url = served.start()
    yield served, url
    served.stop()


@pytest.fixture
def emulator(tls_emulator: tuple[TlsEmulator, str]) -> Emulator:
    state = emulator_of(tls_emulator[0].app)
    state.reset()
    return state


@pytest.fixture
def sdk(
    tls_emulator: tuple[TlsEmulator, str], emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DataverseClient]:
    served, url = tls_emulator
    # requests (which the SDK uses) verifies the server against this bundle only.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(served.ca_file))
    config = DataverseConfig(http_retries=1, http_timeout=10)
    with DataverseClient(url, SandboxCredential(), config) as client:
        yield client


def _rows(emulator: Emulator, entity_set: str) -> list[dict[str, Any]]:
    return [record.values for record in emulator.store.tables[entity_set].values()]


def test_the_sdk_refuses_http_so_the_emulator_is_served_over_tls(
    sdk: DataverseClient, tls_emulator: tuple[TlsEmulator, str]
) -> None:
    """The SDK's constructor refuses ``http://`` (it would send the bearer token in clear);
    the same client works against the emulator over https with the test CA."""
    with pytest.raises(ValueError, match="HTTPS"):
        DataverseClient("http://127.0.0.1:1", SandboxCredential())
    assert tls_emulator[1].startswith("https://127.0.0.1:")
    assert sdk.records.create("account", {"name": "Contoso"})


def test_create_with_binds_then_get_and_update(sdk: DataverseClient, emulator: Emulator) -> None:
    """``records.create`` sends a POST with ``@odata.bind`` lookups and reads the new id from
    ``OData-EntityId``; before every write the SDK reads the table's choice columns through
    the collection cast ``Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata``."""
    account_id = sdk.records.create(
        "account", {"name": "Contoso", "telephone1": "555-0100", "accountcategorycode": 1}
    )
    contact_id = sdk.records.create(
        "contact",
        {
            "firstname": "Ada",
            "lastname": "Lovelace",
            "parentcustomerid_account@odata.bind": f"/accounts({account_id})",
        },
    )
    opportunity_id = sdk.records.create(
        "opportunity",
        {
            "name": "Contoso ERP",
            "estimatedvalue": 125000,
            "customerid_account@odata.bind": f"/accounts({account_id})",
            "parentcontactid@odata.bind": f"/contacts({contact_id})",
        },
    )

    opportunity = sdk.records.retrieve(
        "opportunity",
        opportunity_id,
        select=["name", "estimatedvalue", "_customerid_value", "_parentcontactid_value"],
    )
    assert opportunity is not None
    assert opportunity["name"] == "Contoso ERP"
    assert opportunity["_customerid_value"] == account_id
    assert opportunity["_parentcontactid_value"] == contact_id

    sdk.records.update("opportunity", opportunity_id, {"name": "Contoso ERP rollout"})
    sdk.records.update("account", account_id, {"telephone1": "555-0199"})
    assert emulator.store.get("opportunities", opportunity_id).values["name"] == (
        "Contoso ERP rollout"
    )
    assert emulator.store.get("accounts", account_id).values["telephone1"] == "555-0199"
    contact = emulator.store.get("contacts", contact_id).values
    assert contact["fullname"] == "Ada Lovelace"
    assert contact["_parentcustomerid_value"] == account_id


def test_choice_labels_are_written_as_their_values(
    sdk: DataverseClient, emulator: Emulator
) -> None:
    """The SDK turns a choice label into its value from the options the collection cast
    returned (``_convert_labels_to_ints``), so the emulator must answer that cast with every
    choice column's ``OptionSet``."""
    account_id = sdk.records.create(
        "account", {"name": "Fabrikam", "accountcategorycode": "Preferred Customer"}
    )
    assert emulator.store.get("accounts", account_id).values["accountcategorycode"] == 1


def test_filtered_and_paged_queries(sdk: DataverseClient) -> None:
    """``records.list_pages`` sends ``$select``/``$filter``/``$orderby`` and
    ``Prefer: odata.maxpagesize``, and follows ``@odata.nextLink`` page by page."""
    for number in range(7):
        sdk.records.create(
            "account", {"name": f"Account {number}", "numberofemployees": 10 * number}
        )

    pages = list(
        sdk.records.list_pages(
            "account",
            select=["name", "numberofemployees"],
            filter="numberofemployees ge 20",
            orderby=["name desc"],
            page_size=2,
        )
    )
    assert [len(page) for page in pages] == [2, 2, 1]
    names = [record["name"] for page in pages for record in page]
    assert names == ["Account 6", "Account 5", "Account 4", "Account 3", "Account 2"]

    top = sdk.records.list("account", select=["name"], top=3)
    assert len(top) == 3


def test_batch_with_a_change_set_and_content_id_references(
    sdk: DataverseClient, emulator: Emulator
) -> None:
    """``client.batch``: a ``$batch`` whose change set creates a contact and binds it by
    ``$n`` into an account created in the same change set, then a GET outside it."""
    existing = sdk.records.create("account", {"name": "Northwind"})
    batch = sdk.batch.new()
    with batch.changeset() as change_set:
        contact = change_set.records.create("contact", {"firstname": "Grace", "lastname": "H"})
        change_set.records.create(
            "account", {"name": "Tailspin", "primarycontactid@odata.bind": contact}
        )
    batch.records.update("account", existing, {"telephone1": "555-0142"})
    batch.records.retrieve("account", existing, select=["name", "telephone1"])
    result = batch.execute()

    statuses = [response.status_code for response in result.responses]
    assert statuses == [204, 204, 204, 200], result.responses
    created = {r["name"]: r for r in _rows(emulator, "accounts")}
    assert (
        created["Tailspin"]["_primarycontactid_value"]
        == _rows(emulator, "contacts")[0]["contactid"]
    )
    got = result.responses[-1].data
    assert got is not None and got["telephone1"] == "555-0142"


def test_delete_and_the_404_of_a_deleted_row(sdk: DataverseClient, emulator: Emulator) -> None:
    """``records.delete`` sends ``DELETE`` with ``If-Match: *``; a second delete of the same
    row is a 404 with ``0x80040217`` (ObjectDoesNotExist), which the SDK raises as HttpError;
    ``records.retrieve`` of it answers None."""
    account_id = sdk.records.create("account", {"name": "Gone soon"})
    sdk.records.delete("account", account_id)
    assert emulator.store.find("accounts", account_id) is None
    with pytest.raises(HttpError) as raised:
        sdk.records.delete("account", account_id)
    assert raised.value.status_code == 404
    assert sdk.records.retrieve("account", account_id) is None


def test_bulk_create_and_update_multiple(sdk: DataverseClient, emulator: Emulator) -> None:
    """A list to ``records.create`` is one ``CreateMultiple`` (answered with ``Ids``); a list of
    ids to ``records.update`` is one ``UpdateMultiple``."""
    ids = sdk.records.create(
        "account", [{"name": "Bulk 1"}, {"name": "Bulk 2"}, {"name": "Bulk 3"}]
    )
    assert len(ids) == 3
    assert sorted(emulator.store.get("accounts", i).values["name"] for i in ids) == [
        "Bulk 1",
        "Bulk 2",
        "Bulk 3",
    ]
    sdk.records.update("account", ids, {"telephone1": "555-0000"})
    assert {emulator.store.get("accounts", i).values["telephone1"] for i in ids} == {"555-0000"}
    stats = emulator.stats()["requests"]
    assert stats["POST /api/data/v9.2/accounts/Microsoft.Dynamics.CRM.CreateMultiple"] == 1
    assert stats["POST /api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpdateMultiple"] == 1


def test_table_metadata_and_adding_a_column(sdk: DataverseClient, emulator: Emulator) -> None:
    """``tables.get`` filters ``EntityDefinitions`` by ``LogicalName``; ``tables.list`` by
    ``IsPrivate eq false``; ``tables.add_columns`` POSTs to
    ``EntityDefinitions(<MetadataId>)/Attributes`` (the primary key, not the alternate key)."""
    info = sdk.tables.get("account")
    assert info is not None
    assert info["entity_set_name"] == "accounts"
    assert info["primary_id_attribute"] == "accountid"
    assert info["primary_name_attribute"] == "name"

    listed = {t["LogicalName"] for t in sdk.tables.list(select=["LogicalName"])}
    assert {"account", "contact", "opportunity", "lead"} <= listed

    created = sdk.tables.add_columns("account", {"new_Notes": "string", "new_Tier": "int"})
    assert created == ["new_Notes", "new_Tier"]
    table = emulator.store.schema.by_logical_name("account")
    assert table is not None and {"new_notes", "new_tier"} <= set(table.columns)
    account_id = sdk.records.create("account", {"name": "With notes", "new_notes": "hi"})
    assert emulator.store.get("accounts", account_id).values["new_notes"] == "hi"


def test_microsofts_deep_insert_example_through_microsofts_client(
    sdk: DataverseClient, emulator: Emulator
) -> None:
    """The deep-insert example of learn.microsoft.com power-apps/developer/data-platform/webapi/
    create-entity-web-api ("Create related table rows in one operation") sent with
    ``records.create``: the standard relationship ``opportunity_customer_accounts`` (the SDK
    lowercases only the top-level keys, so the nested ``Opportunity_Tasks`` keeps its case)."""
    account_id = sdk.records.create(
        "account",
        {
            "name": "Sample Account",
            "primarycontactid": {"firstname": "John", "lastname": "Smith"},
            "opportunity_customer_accounts": [
                {
                    "name": "Opportunity associated to Sample Account",
                    "Opportunity_Tasks": [{"subject": "Task associated to opportunity"}],
                }
            ],
        },
    )
    [opportunity] = _rows(emulator, "opportunities")
    [task] = _rows(emulator, "tasks")
    assert opportunity["_customerid_value"] == account_id
    assert task["_regardingobjectid_value"] == opportunity["opportunityid"]
    account = sdk.records.retrieve(
        "account", account_id, select=["name"], expand=["primarycontactid($select=fullname)"]
    )
    assert account is not None and account["primarycontactid"]["fullname"] == "John Smith"
