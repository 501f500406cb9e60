#!/bin/sh
# azd postdeploy hook (azure.yaml): runs after `azd deploy` and the deploy step of `azd up`.
# docs/deploy.md step 7, automated: it reads the function keys of partner_center_webhook and
# dataverse_webhook, runs `cosell config check` with the deployed app's settings, then registers
# both pushes (`cosell webhook register --url ... --dataverse-url ...`). Rerun it with
# `azd hooks run postdeploy` (e.g. once the Dataverse application user and schema exist).
#
# The CLI gets the deployed app's settings from `az functionapp config appsettings list`, written
# to a temporary local.settings.json (Core Tools' format, readable by you only, deleted on exit)
# passed with --settings-file. Left out: the settings that make the CLI act as the app's managed
# identity (AzureWebJobsStorage__credential/__clientId, AZURE_CLIENT_ID, Application Insights),
# so it uses your `az login` identity instead. The Partner Center settings stay Key Vault
# references, which cosell reads with that identity (docs/deploy.md, "The cosell CLI on an
# operator's machine"); a cosell too old for that refuses them, and this hook then says so.
#
# Switches: COSELL_HOOKS=off skips it; COSELL_WEBHOOK_OVERWRITE=true passes --overwrite (take a
# Partner Center registration over from another URL); COSELL_HOOK_KEY_ATTEMPTS / _KEY_WAIT (8, 15 s)
# how long to wait for the function keys of a host that is still starting.
set -eu

here=$(dirname "$0")
. "$here/common.sh"

if hooks_off; then
    echo "cosell postdeploy: COSELL_HOOKS=off, skipped."
    exit 0
fi

load_env_values
work=$(mktemp -d)
chmod 700 "$work"
trap 'rm -rf "$work" "$hook_values_file"' EXIT

group=$(env_value AZURE_RESOURCE_GROUP)
app=$(env_value AZURE_FUNCTION_NAME)
base=$(env_value AZURE_FUNCTION_URL)
if [ -z "$group" ] || [ -z "$app" ] || [ -z "$base" ]; then
    echo "cosell postdeploy: the azd environment lacks AZURE_RESOURCE_GROUP, AZURE_FUNCTION_NAME or AZURE_FUNCTION_URL; run azd provision first." >&2
    exit 1
fi

cosell=$(cosell_command)
if [ -z "$cosell" ]; then
    echo "cosell postdeploy: the cosell CLI is not installed (make install, or pip install -e .); then: azd hooks run postdeploy" >&2
    exit 1
fi
python=$(python_command)

attempts=${COSELL_HOOK_KEY_ATTEMPTS:-8}
wait_seconds=${COSELL_HOOK_KEY_WAIT:-15}

function_key() { # FUNCTION: its default key; the host makes keys when it first starts
    n=0
    while [ "$n" -lt "$attempts" ]; do
        n=$((n + 1))
        key=$(az functionapp function keys list -g "$group" -n "$app" --function-name "$1" --query default -o tsv 2>/dev/null || true)
        if [ -n "$key" ]; then
            printf '%s' "$key"
            return 0
        fi
        [ "$n" -lt "$attempts" ] && sleep "$wait_seconds"
    done
    return 1
}

echo
echo "Co-sell Sync: registering the webhooks of '$app'."
if ! pc_key=$(function_key partner_center_webhook); then
    echo "cosell postdeploy: no key for partner_center_webhook yet (the host may still be starting); rerun: azd hooks run postdeploy" >&2
    exit 1
fi
if ! dv_key=$(function_key dataverse_webhook); then
    echo "cosell postdeploy: no key for dataverse_webhook yet (the host may still be starting); rerun: azd hooks run postdeploy" >&2
    exit 1
fi

# The deployed app's settings, in local.settings.json's shape, for --settings-file.
settings="$work/local.settings.json"
az functionapp config appsettings list -g "$group" -n "$app" -o json >"$work/appsettings.json"
"$python" - "$work/appsettings.json" "$settings" <<'PY'
import json
import sys

# Settings that would make the CLI act as the app (its managed identity, its telemetry).
APP_ONLY = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
with open(sys.argv[1], encoding="utf-8") as f:
    listed = json.load(f)
values = {s["name"]: s.get("value") or "" for s in listed if s["name"] not in APP_ONLY}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump({"IsEncrypted": False, "Values": values}, f, indent=2)
PY

status=0
echo
echo "cosell config check (the deployed app's settings, your az login identity):"
if "$cosell" --settings-file "$settings" config check >"$work/check.txt" 2>&1; then
    cat "$work/check.txt"
else
    status=1
    cat "$work/check.txt"
    if grep -q "Key Vault reference was not resolved" "$work/check.txt"; then
        # The settings file holds the Partner Center settings as @Microsoft.KeyVault(...) references,
        # as the app does; a cosell that cannot resolve them refuses them. Registering would fail alike.
        echo
        echo "This cosell cannot read Key Vault references (install the current one: docs/deploy.md), so the"
        echo "webhooks were not registered. Until it can, register by hand (docs/deploy.md step 7) with"
        echo "PARTNER_CENTER_TENANT_ID, PARTNER_CENTER_CLIENT_ID, PARTNER_CENTER_CLIENT_SECRET and"
        echo "PARTNER_CENTER_REFRESH_TOKEN in your environment (the environment wins over --settings-file)."
        exit 1
    fi
fi

overwrite=""
if [ "${COSELL_WEBHOOK_OVERWRITE:-false}" = "true" ]; then
    overwrite="--overwrite"
fi

echo
echo "cosell webhook register (Partner Center and Dataverse):"
# The URLs carry the function keys (?code=); cosell masks them in what it prints.
# shellcheck disable=SC2086
if ! "$cosell" --settings-file "$settings" webhook register \
    --url "$base/api/webhooks/partner-center?code=$pc_key" \
    --dataverse-url "$base/api/webhooks/dataverse?code=$dv_key" $overwrite; then
    status=1
    echo
    echo "Registration failed (see above). Finish docs/deploy.md steps 3-6 (Key Vault secrets, the Dataverse"
    echo "application user, cosell schema apply), then rerun: azd hooks run postdeploy"
    echo "If Partner Center's registration points at another URL: COSELL_WEBHOOK_OVERWRITE=true azd hooks run postdeploy"
fi
exit "$status"
