#!/usr/bin/env bash
# Rotates the bridge's tag-signing key now, by hand. The bridge rotates it itself on Key Vault's
# near-expiry notice (docs/security.md, "The signing key rotates itself"); this is for the day
# you want a new key at once, e.g. after a suspected leak:
#
#   infra/rotate-signing-key.sh <key-vault-name> [--revoke]
#
# 1. a new version of the secret signing-key, expiring in 60 days like the ones the bridge makes:
#    every instance signs with it within a minute (it reads the versions itself; no restart);
# 2. with --revoke, every older version is disabled at once: nothing verifies with a leaked key
#    any more. Jobs it signed that are still running lose their events' signature, and
#    reconciliation, which reads Azure ML itself, routes their outcomes instead.
# No value is printed or passed on a command line another user could read. Needs Key Vault
# Secrets Officer on the secret (or the vault).
set -euo pipefail
vault=${1:?key vault name}
revoke=${2:-}
name=signing-key

expires=$(python3 -c 'import datetime as d; print((d.datetime.now(d.UTC) + d.timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
new=$(az keyvault secret set --vault-name "$vault" --name "$name" --expires "$expires" \
  --content-type application/vnd.azureml-bridge.signing-key \
  --file <(python3 -c 'import secrets; print(secrets.token_urlsafe(48), end="")') \
  --query id -o tsv)
echo "new version of $name in $vault: ${new##*/}, expires $expires"

if [ "$revoke" = "--revoke" ]; then
  for id in $(az keyvault secret list-versions --vault-name "$vault" --name "$name" \
      --query "[?attributes.enabled].id" -o tsv); do
    if [ "$id" != "$new" ]; then
      az keyvault secret set-attributes --id "$id" --enabled false -o none
      echo "disabled ${id##*/}"
    fi
  done
fi
