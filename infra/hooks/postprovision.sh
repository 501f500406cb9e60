#!/bin/sh
# azd postprovision hook (azure.yaml): runs after `azd provision` and the provision step of
# `azd up`. It prints the steps that remain manual with this environment's real names, and offers
# to put the four Partner Center settings into Key Vault (only those not there yet: a secret that
# exists, such as a refresh token the app has rotated, is never overwritten). Rerun it with
# `azd hooks run postprovision`. docs/deploy.md, "2a. Deploy with azd up".
#
# Switches: COSELL_HOOKS=off skips it; COSELL_HOOK_INTERACTIVE=false never asks (CI, no terminal:
# never asks either); COSELL_HOOK_INTERACTIVE=force asks on a stdin that is not a terminal.
set -eu

here=$(dirname "$0")
. "$here/common.sh"

if hooks_off; then
    echo "cosell postprovision: COSELL_HOOKS=off, skipped."
    exit 0
fi

load_env_values
trap 'rm -f "$hook_values_file"' EXIT

group=$(env_value AZURE_RESOURCE_GROUP)
app=$(env_value AZURE_FUNCTION_NAME)
vault=$(env_value AZURE_KEY_VAULT_NAME)
client_id=$(env_value AZURE_MANAGED_IDENTITY_CLIENT_ID)
identity=$(env_value AZURE_MANAGED_IDENTITY_NAME)
dataverse=$(env_value DATAVERSE_URL)
for name in group app vault client_id; do
    eval "value=\$$name"
    if [ -z "$value" ]; then
        echo "cosell postprovision: the azd environment lacks the deployment's outputs (AZURE_RESOURCE_GROUP, AZURE_FUNCTION_NAME, AZURE_KEY_VAULT_NAME, AZURE_MANAGED_IDENTITY_CLIENT_ID); run azd provision first." >&2
        exit 1
    fi
done

# The four Partner Center settings, as Key Vault secrets (main.bicep, secretNames).
secrets="partner-center-tenant-id partner-center-client-id partner-center-client-secret partner-center-refresh-token"

echo
echo "Co-sell Sync: provisioned '$app' in resource group '$group'."
echo

present=""
if listed=$(az keyvault secret list --vault-name "$vault" --query "[].name" -o tsv 2>/dev/null); then
    present=$listed
    listed_ok=true
else
    listed_ok=false
    echo "Could not list the secrets of Key Vault '$vault' (your identity needs Key Vault Secrets Officer on it,"
    echo "which operatorPrincipalId grants; a new role can take a few minutes to apply)."
fi

missing=""
for secret in $secrets; do
    if printf '%s\n' "$present" | grep -qx "$secret"; then
        echo "  Key Vault secret $secret: set"
    else
        missing="$missing $secret"
        [ "$listed_ok" = true ] && echo "  Key Vault secret $secret: NOT SET"
    fi
done

set_secret() { # NAME: read a value without echo and store it; empty input skips
    name=$1
    printf 'Value for %s (input hidden; Enter alone skips): ' "$name"
    stty -echo 2>/dev/null || true
    value=""
    IFS= read -r value || true
    stty echo 2>/dev/null || true
    echo
    if [ -z "$value" ]; then
        echo "  skipped $name"
        return 0
    fi
    file=$(mktemp)
    chmod 600 "$file"
    printf '%s' "$value" >"$file"
    value=""
    # --file keeps the value out of the process list and the shell history.
    if az keyvault secret set --vault-name "$vault" --name "$name" --file "$file" --encoding utf-8 --output none; then
        echo "  set $name"
        changed=true
    else
        echo "  could not set $name (see the error above)"
    fi
    rm -f "$file"
}

changed=false
if [ -n "$missing" ] && [ "$listed_ok" = true ]; then
    if interactive || [ "${COSELL_HOOK_INTERACTIVE:-}" = "force" ]; then
        echo
        echo "Set the missing Partner Center settings in Key Vault now (step 3 of docs/deploy.md says where they come from)."
        for secret in $missing; do
            set_secret "$secret"
        done
    else
        echo
        echo "Not interactive: set them later with 'azd hooks run postprovision' in a terminal, or:"
        for secret in $missing; do
            echo "  az keyvault secret set --vault-name $vault --name $secret --file <file holding the value>"
        done
    fi
fi

echo
echo "Remaining manual steps (docs/deploy.md):"
if [ "$changed" = true ]; then
    echo "  * The app reads new secrets when its configuration changes: run 'azd provision' once more."
fi
echo "  * Step 5: in the Power Platform admin center, add an application user for the managed identity"
echo "    '${identity:-$client_id}' (application id $client_id) to ${dataverse:-your Dataverse environment} with the 'Co-sell Sync' role."
echo "  * Step 6: cosell schema apply --solution CoSellSync (against ${dataverse:-DATAVERSE_URL})."
echo "  * Step 7 runs in the postdeploy hook after 'azd deploy': both webhooks are registered; rerun it with"
echo "    'azd hooks run postdeploy' once the steps above are done."
echo "  Key Vault: $vault   Function app: $app   Resource group: $group"
echo
