"""The azd hooks (azure.yaml, infra/hooks/): valid sh, wired the way azd's schema reads them, and
calling azd, az and cosell with the expected arguments. They run here against stub executables
on PATH that record each call: no Azure, no network."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.infra_model import REPO

HOOKS = REPO / "infra" / "hooks"
SCRIPTS = sorted(HOOKS.glob("*.sh"))
# azd's hook options (https://learn.microsoft.com/azure/developer/azure-developer-cli/azd-extensibility).
HOOK_OPTIONS = {"shell", "run", "interactive", "continueOnError", "windows", "posix"}

ENV_VALUES = {
    "AZURE_ENV_NAME": "cosell-test",
    "AZURE_RESOURCE_GROUP": "rg-cosell-test",
    "AZURE_FUNCTION_NAME": "func-cosell-abc",
    "AZURE_FUNCTION_URL": "https://func-cosell-abc.azurewebsites.net",
    "WEBHOOK_URL": "https://func-cosell-abc.azurewebsites.net/api/webhooks/partner-center",
    "AZURE_KEY_VAULT_NAME": "kv-cosell-abc",
    "AZURE_MANAGED_IDENTITY_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_MANAGED_IDENTITY_NAME": "id-cosell-abc",
    "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
}
APP_SETTINGS = [
    {"name": "AzureWebJobsStorage__queueServiceUri", "value": "https://st.queue.core.windows.net"},
    {"name": "AzureWebJobsStorage__tableServiceUri", "value": "https://st.table.core.windows.net"},
    {"name": "AzureWebJobsStorage__credential", "value": "managedidentity"},
    {"name": "AzureWebJobsStorage__clientId", "value": "mi-client-id"},
    {"name": "AZURE_CLIENT_ID", "value": "mi-client-id"},
    {"name": "APPLICATIONINSIGHTS_CONNECTION_STRING", "value": "InstrumentationKey=x"},
    {"name": "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "value": "ClientId=x;Authorization=AAD"},
    {"name": "DATAVERSE_URL", "value": "https://contoso.crm.dynamics.com"},
    {
        "name": "PARTNER_CENTER_REFRESH_TOKEN",
        "value": "@Microsoft.KeyVault(VaultName=kv-cosell-abc;"
        "SecretName=partner-center-refresh-token)",
    },
]
APP_ONLY = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}

# One stub for azd, az and cosell: it records its name, argv and (for --file / --settings-file)
# the file's content, and answers from the STUB_* environment.
STUB = r"""
import json, os, sys
from pathlib import Path

name = Path(sys.argv[0]).name
args = sys.argv[1:]
state = Path(os.environ["STUB_STATE"])
record = {"cmd": name, "args": args}
for flag in ("--file", "--settings-file"):
    if flag in args:
        record["file"] = Path(args[args.index(flag) + 1]).read_text()
        record["file_path"] = args[args.index(flag) + 1]
with open(state / "calls.jsonl", "a") as log:
    log.write(json.dumps(record) + "\n")

def count(key):
    path = state / f"count-{key}"
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n

if name == "azd" and args[:2] == ["env", "get-values"]:
    for key, value in json.loads(os.environ["STUB_ENV_VALUES"]).items():
        print(f'{key}="{value}"')
elif name == "az" and args[:3] == ["keyvault", "secret", "list"]:
    print("\n".join(json.loads(os.environ.get("STUB_SECRETS", "[]"))))
elif name == "az" and args[:3] == ["keyvault", "secret", "set"]:
    pass
elif name == "az" and args[:4] == ["functionapp", "function", "keys", "list"]:
    function = args[args.index("--function-name") + 1]
    if count(function) > int(os.environ.get("STUB_KEY_MISSES", "0")):
        print(f"key-of-{function}")
elif name == "az" and args[:4] == ["functionapp", "config", "appsettings", "list"]:
    print(os.environ["STUB_APP_SETTINGS"])
elif name == "cosell" and "config" in args:
    print(os.environ.get("STUB_CHECK_OUTPUT", "PASS settings"))
    sys.exit(int(os.environ.get("STUB_CHECK_EXIT", "0")))
elif name == "cosell" and "webhook" in args:
    print("registered")
    sys.exit(int(os.environ.get("STUB_REGISTER_EXIT", "0")))
else:
    print(f"stub {name}: unexpected {args}", file=sys.stderr)
    sys.exit(2)
"""


class Run:
    def __init__(self, result: subprocess.CompletedProcess[str], state: Path) -> None:
        self.code = result.returncode
        self.out = result.stdout + result.stderr
        log = state / "calls.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        self.calls: list[dict[str, Any]] = [json.loads(line) for line in lines]

    def of(self, cmd: str, *prefix: str) -> list[dict[str, Any]]:
        return [
            c for c in self.calls if c["cmd"] == cmd and c["args"][: len(prefix)] == list(prefix)
        ]


def _run(tmp_path: Path, hook: str, stdin: str = "", **env: str) -> Run:
    bin_dir, state, cwd = tmp_path / "bin", tmp_path / "state", tmp_path / "project"
    for folder in (bin_dir, state, cwd):
        folder.mkdir(parents=True, exist_ok=True)
    for name in ("azd", "az", "cosell"):
        stub = bin_dir / name
        stub.write_text(f"#!{sys.executable}\n{STUB}")
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_STATE": str(state),
        "STUB_ENV_VALUES": json.dumps(ENV_VALUES),
        "STUB_APP_SETTINGS": json.dumps(APP_SETTINGS),
        "COSELL_HOOK_KEY_WAIT": "0",
        **env,
    }
    result = subprocess.run(
        ["sh", str(HOOKS / f"{hook}.sh")],
        cwd=cwd,  # no .venv there: the stubs on PATH are used
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(result, state)


# --- azure.yaml -----------------------------------------------------------------------------------


def _azure_yaml_hooks() -> dict[str, Any]:
    """azure.yaml's `hooks:` block (mappings and `|` block scalars: all it uses; no PyYAML here)."""
    lines = (REPO / "azure.yaml").read_text().splitlines()
    start = lines.index("hooks:")
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(0, root)]
    index = start + 1
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        key, _, value = line.strip().partition(":")
        value = value.strip()
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value == "|":
            block = []
            while index < len(lines) and (
                not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
            ):
                block.append(lines[index].strip())
                index += 1
            parent[key] = "\n".join(block).strip()
        elif value:
            parent[key] = {"true": True, "false": False}.get(value, value)
        else:
            parent[key] = {}
            stack.append((indent, parent[key]))
    return root


def test_azure_yaml_declares_both_hooks_for_posix_and_windows() -> None:
    hooks = _azure_yaml_hooks()
    assert set(hooks) == {"postprovision", "postdeploy"}
    for name, hook in hooks.items():
        assert set(hook) <= HOOK_OPTIONS, name
        posix, windows = hook["posix"], hook["windows"]
        for config in (posix, windows):
            assert set(config) <= HOOK_OPTIONS - {"windows", "posix"}, name
            # interactive: the output is shown and postprovision can ask; continueOnError: a hook
            # reports the next step, it never undoes a deployment that succeeded.
            assert config["interactive"] is True
            assert config["continueOnError"] is True
        assert posix == {
            "shell": "sh",
            "run": f"./infra/hooks/{name}.sh",
            "interactive": True,
            "continueOnError": True,
        }
        assert windows["shell"] == "pwsh"
        assert f"sh ./infra/hooks/{name}.sh" in windows["run"]


def test_hooks_point_at_executable_scripts_that_exist() -> None:
    for name, hook in _azure_yaml_hooks().items():
        script = REPO / hook["posix"]["run"]
        assert script.is_file(), f"{name}: {script} missing"
        assert os.access(script, os.X_OK), f"{name}: {script} is not executable"
        assert script.read_text().startswith("#!/bin/sh\n")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_hook_scripts_are_valid_sh(script: Path) -> None:
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in SCRIPTS} >= {"postprovision.sh", "postdeploy.sh", "common.sh"}


# --- postdeploy -----------------------------------------------------------------------------------


def test_postdeploy_registers_both_webhooks_with_the_function_keys(tmp_path: Path) -> None:
    run = _run(tmp_path, "postdeploy")
    assert run.code == 0, run.out
    group, app = ENV_VALUES["AZURE_RESOURCE_GROUP"], ENV_VALUES["AZURE_FUNCTION_NAME"]
    assert run.of("azd", "env", "get-values")
    keys = run.of("az", "functionapp", "function", "keys", "list")
    for function in ("partner_center_webhook", "dataverse_webhook"):
        [call] = [c for c in keys if function in c["args"]]
        assert call["args"] == [
            "functionapp", "function", "keys", "list",
            "-g", group, "-n", app, "--function-name", function,
            "--query", "default", "-o", "tsv",
        ]  # fmt: skip
    [settings_call] = run.of("az", "functionapp", "config", "appsettings", "list")
    assert settings_call["args"][4:] == ["-g", group, "-n", app, "-o", "json"]
    [check] = run.of("cosell", "--settings-file")[:1]
    assert check["args"][2:] == ["config", "check"]
    [register] = [c for c in run.of("cosell") if "webhook" in c["args"]]
    base = ENV_VALUES["AZURE_FUNCTION_URL"]
    assert register["args"][2:] == [
        "webhook",
        "register",
        "--url",
        f"{base}/api/webhooks/partner-center?code=key-of-partner_center_webhook",
        "--dataverse-url",
        f"{base}/api/webhooks/dataverse?code=key-of-dataverse_webhook",
    ]
    # Both commands read the deployed app's settings, minus what would make the CLI act as the
    # app's managed identity; the Key Vault reference is passed as the app has it.
    for call in (check, register):
        values = json.loads(call["file"])["Values"]
        expected = {s["name"]: s["value"] for s in APP_SETTINGS if s["name"] not in APP_ONLY}
        assert values == expected
        assert not Path(call["file_path"]).exists(), "the settings file must be deleted"
    assert "code=key-of" not in run.out, "the hook must not print the function keys"
    order = [c["cmd"] + " " + " ".join(c["args"][:4]) for c in run.calls]
    assert order.index(next(o for o in order if "config check" in o)) < order.index(
        next(o for o in order if "webhook register" in o)
    )


def test_postdeploy_waits_for_the_keys_of_a_starting_host(tmp_path: Path) -> None:
    run = _run(tmp_path, "postdeploy", STUB_KEY_MISSES="2", COSELL_HOOK_KEY_ATTEMPTS="3")
    assert run.code == 0, run.out
    assert len(run.of("az", "functionapp", "function", "keys", "list")) == 6
    gone = _run(tmp_path / "gone", "postdeploy", STUB_KEY_MISSES="9", COSELL_HOOK_KEY_ATTEMPTS="2")
    assert gone.code == 1
    assert "azd hooks run postdeploy" in gone.out
    assert not gone.of("cosell")


def test_postdeploy_says_when_the_cli_cannot_read_key_vault_references(tmp_path: Path) -> None:
    message = (
        "FAIL settings: PARTNER_CENTER_REFRESH_TOKEN: the Key Vault reference was not resolved; "
        "check that the secret exists"
    )
    run = _run(tmp_path, "postdeploy", STUB_CHECK_OUTPUT=message, STUB_CHECK_EXIT="1")
    assert run.code == 1
    assert "cannot read Key Vault references" in run.out
    assert not [c for c in run.of("cosell") if "webhook" in c["args"]]


def test_postdeploy_reports_a_failed_registration_and_can_overwrite(tmp_path: Path) -> None:
    failed = _run(tmp_path / "failed", "postdeploy", STUB_REGISTER_EXIT="1", STUB_CHECK_EXIT="1")
    assert failed.code == 1
    assert "azd hooks run postdeploy" in failed.out
    assert "COSELL_WEBHOOK_OVERWRITE=true" in failed.out
    overwrite = _run(tmp_path / "overwrite", "postdeploy", COSELL_WEBHOOK_OVERWRITE="true")
    [register] = [c for c in overwrite.of("cosell") if "webhook" in c["args"]]
    assert register["args"][-1] == "--overwrite"


# --- postprovision --------------------------------------------------------------------------------


def test_postprovision_prints_the_manual_steps_with_the_real_names(tmp_path: Path) -> None:
    run = _run(
        tmp_path,
        "postprovision",
        STUB_SECRETS=json.dumps(["partner-center-tenant-id", "partner-center-client-id"]),
        COSELL_HOOK_INTERACTIVE="false",
    )
    assert run.code == 0, run.out
    for name in (
        "AZURE_KEY_VAULT_NAME",
        "AZURE_FUNCTION_NAME",
        "AZURE_RESOURCE_GROUP",
        "AZURE_MANAGED_IDENTITY_CLIENT_ID",
        "DATAVERSE_URL",
    ):
        assert ENV_VALUES[name] in run.out, name
    [listing] = run.of("az", "keyvault", "secret", "list")
    assert listing["args"][3:] == [
        "--vault-name",
        "kv-cosell-abc",
        "--query",
        "[].name",
        "-o",
        "tsv",
    ]
    assert "partner-center-tenant-id: set" in run.out
    assert "partner-center-refresh-token: NOT SET" in run.out
    assert not run.of("az", "keyvault", "secret", "set"), "not interactive: never writes"
    assert "azd hooks run postprovision" in run.out
    assert "azd hooks run postdeploy" in run.out


def test_postprovision_sets_the_missing_secrets_without_echo_or_argv(tmp_path: Path) -> None:
    token = "0.AAAA-refresh-token-value"
    run = _run(
        tmp_path,
        "postprovision",
        stdin=f"\n{token}\n",  # skip the client secret, set the refresh token
        STUB_SECRETS=json.dumps(["partner-center-tenant-id", "partner-center-client-id"]),
        COSELL_HOOK_INTERACTIVE="force",
    )
    assert run.code == 0, run.out
    [written] = run.of("az", "keyvault", "secret", "set")
    args = written["args"]
    assert args[args.index("--vault-name") + 1] == "kv-cosell-abc"
    assert args[args.index("--name") + 1] == "partner-center-refresh-token"
    assert written["file"] == token, "the value goes through a file, without a newline"
    assert token not in " ".join(args) and token not in run.out
    assert not Path(written["file_path"]).exists()
    assert "skipped partner-center-client-secret" in run.out
    assert "run 'azd provision' once more" in run.out
    # Secrets that exist are never offered: the app may have rotated the refresh token.
    assert "Value for partner-center-tenant-id" not in run.out


def test_hooks_can_be_switched_off(tmp_path: Path) -> None:
    for hook in ("postprovision", "postdeploy"):
        run = _run(tmp_path / hook, hook, COSELL_HOOKS="off")
        assert run.code == 0 and not run.calls
        assert re.search(r"COSELL_HOOKS=off, skipped", run.out)
