#!/usr/bin/env bash
# Airflow's app registration in Entra ID, its app role, and that role assigned to the bridge's
# managed identity: what lets the bridge sign in to Airflow with its identity and no secret
# (BRIDGE_AIRFLOW_AUTH=entra). See docs/airflow-identity.md, which says why this is a script beside
# the Bicep and not Bicep.
#
#   infra/airflow/entra-app.sh APP_NAME BRIDGE_PRINCIPAL_ID [APP_ROLE]
#
#   APP_NAME             the registration's name; its application id URI is api://APP_NAME
#   BRIDGE_PRINCIPAL_ID  the Function App identity's principal (object) id: the Bicep output
#                        AIRFLOW_BRIDGE_FUNCTION_IDENTITY_PRINCIPAL_ID, or `az identity show ... --query principalId`
#   APP_ROLE             the app role's value (default AzureMLBridge)
#
# Run it as someone who may create app registrations and grant app roles (Application
# Administrator, or the app's owner and Privileged Role Administrator for the grant). Running it
# again changes nothing: each step looks for what it would make first.
#
# It prints the settings for both sides: the Function App's (infra's airflowAudience parameter)
# and Airflow's ([azureml_bridge] options of the shipped auth manager).
set -euo pipefail

app_name=${1:?usage: entra-app.sh APP_NAME BRIDGE_PRINCIPAL_ID [APP_ROLE]}
principal_id=${2:?usage: entra-app.sh APP_NAME BRIDGE_PRINCIPAL_ID [APP_ROLE]}
role=${3:-AzureMLBridge}
uri="api://$app_name"
graph=https://graph.microsoft.com/v1.0

tenant=$(az account show --query tenantId -o tsv)

# 1. The registration: an API other apps call, with one application (app-only) role, and v2 tokens
#    (aud is the registration's client id, iss https://login.microsoftonline.com/<tenant>/v2.0).
app_id=$(az ad app list --identifier-uri "$uri" --query "[0].appId" -o tsv)
if [ -z "$app_id" ]; then
  role_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
  roles=$(mktemp)
  trap 'rm -f "$roles"' EXIT
  cat >"$roles" <<JSON
[{"id": "$role_id", "value": "$role", "isEnabled": true, "allowedMemberTypes": ["Application"],
  "displayName": "Azure ML bridge", "description": "Post asset events and trigger DAG runs in Airflow as the Azure ML bridge."}]
JSON
  app_id=$(az ad app create --display-name "$app_name" --identifier-uris "$uri" \
    --app-roles "@$roles" --sign-in-audience AzureADMyOrg --query appId -o tsv)
  echo "created the app registration $app_name ($app_id)" >&2
fi
az ad app update --id "$app_id" --set api.requestedAccessTokenVersion=2
role_id=$(az ad app show --id "$app_id" --query "appRoles[?value=='$role'].id | [0]" -o tsv)
if [ -z "$role_id" ]; then
  echo "the app registration $app_name has no app role $role: add it, or name the one it has" >&2
  exit 1
fi

# 2. Its service principal, which tokens are issued for; only identities assigned a role get one.
sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query "[0].id" -o tsv)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
fi
az ad sp update --id "$sp_id" --set appRoleAssignmentRequired=true

# 3. The role, assigned to the bridge's managed identity (Microsoft Graph: appRoleAssignedTo).
assigned=$(az rest --method GET --uri "$graph/servicePrincipals/$sp_id/appRoleAssignedTo" \
  --query "value[?principalId=='$principal_id' && appRoleId=='$role_id'].id | [0]" -o tsv)
if [ -z "$assigned" ]; then
  az rest --method POST --uri "$graph/servicePrincipals/$sp_id/appRoleAssignedTo" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"$principal_id\", \"resourceId\": \"$sp_id\", \"appRoleId\": \"$role_id\"}" \
    --output none
  echo "assigned $role to $principal_id" >&2
fi

cat <<EOF
# The Function App (azd env set, or the Bicep parameter airflowAudience):
AIRFLOW_AUDIENCE=$uri

# Airflow's API server (airflow.cfg, or the same as AIRFLOW__AZUREML_BRIDGE__* variables):
[core]
auth_manager = bridge.provider.entra.fab.EntraFabAuthManager
[api_auth]
jwt_audience = urn:airflow.apache.org:public-api
[azureml_bridge]
entra_tenant_id = $tenant
entra_audience = $app_id,$uri
entra_app_roles = $role=azureml-bridge
EOF
