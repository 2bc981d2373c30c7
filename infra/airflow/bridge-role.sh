#!/usr/bin/env bash
# The bridge's own Airflow role, for the FAB auth manager: read assets, post asset events, and
# trigger runs of the DAGs named here. Nothing else: no connections, variables, pools, users,
# configuration, task logs, or other DAGs. See docs/airflow-identity.md.
#
#   infra/airflow/bridge-role.sh ROLE [DAG_ID ...]
#
# Run it where the `airflow` command reaches the deployment's metadata database (a scheduler or
# API server pod, or a one-off job in its image), after the DAGs are parsed; run it again when
# the policy allows another DAG. Then give the bridge's user the role:
#
#   airflow users create --username azureml-bridge --role ROLE --firstname Azure --lastname ML \
#     --email azureml-bridge@example.com --password "$(az keyvault secret show ... -o tsv)"
#
# Permissions, as the FAB auth manager (apache-airflow-providers-fab 3.x) checks them:
# - POST /api/v2/assets/events            can_create on Assets
# - GET  /api/v2/assets/events           can_read on Assets
# - GET  /api/v2/assets, .../assets/{id}  can_read on Assets and on Asset Aliases (these routes
#                                         also list the aliases an asset belongs to)
# - POST /api/v2/dags/{dag}/dagRuns       can_create on DAG Runs, and can_edit on DAG:{dag}:
#                                         FAB asks for edit on the DAG itself before a run of it,
#                                         so the DAGs the bridge may trigger are exactly those
#                                         named here.
set -euo pipefail

role=${1:?usage: bridge-role.sh ROLE [DAG_ID ...]}
shift

# DAG-level resources (DAG:<id>) exist once the DAGs' permissions are synced.
airflow sync-perm --include-dags
if ! airflow roles list --output plain | grep -qx "$role"; then
  airflow roles create "$role"
fi
airflow roles add-perms "$role" --resource Assets --action can_read can_create
airflow roles add-perms "$role" --resource "Asset Aliases" --action can_read
if [ "$#" -gt 0 ]; then
  airflow roles add-perms "$role" --resource "DAG Runs" --action can_create
  for dag in "$@"; do
    airflow roles add-perms "$role" --resource "DAG:$dag" --action can_read can_edit
  done
fi
echo "role $role: assets read and create; DAG runs of: ${*:-(none)}"
