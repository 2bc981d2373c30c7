#!/usr/bin/env bash
# Rotates the bridge's tag-signing key with no downtime (docs/security.md, "Rotating the signing
# key"). Run it every 30 days from a scheduled pipeline whose identity is Key Vault Secrets Officer
# on the vault and may restart the Function App:
#
#   infra/rotate-signing-key.sh <key-vault-name> <resource-group> <function-app-name>
#
# 1. the current key becomes the previous one: jobs it signed keep verifying;
# 2. a new random key becomes the current one: new jobs are signed with it;
# 3. the Function App restarts, so every instance resolves the new pair at once (Key Vault
#    references are otherwise re-read within 24 hours, and instances would disagree meanwhile).
# No value is printed or passed on a command line another user could read.
set -euo pipefail
vault=${1:?key vault name}
group=${2:?resource group}
app=${3:?function app name}

current=$(az keyvault secret show --vault-name "$vault" --name signing-key --query value -o tsv)
az keyvault secret set --vault-name "$vault" --name signing-key-previous \
  --file <(printf '%s' "$current") -o none
unset current
az keyvault secret set --vault-name "$vault" --name signing-key \
  --file <(python3 -c 'import secrets; print(secrets.token_urlsafe(48), end="")') -o none
az functionapp restart --resource-group "$group" --name "$app" -o none
echo "signing key rotated in $vault; $app restarted"
