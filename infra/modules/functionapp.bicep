// The Function App on the Flex Consumption plan: Python 3.11, a user-assigned identity for
// everything (host storage, deployment package, Service Bus, ledger, Key Vault, telemetry), and
// exactly the app settings the code reads (bridge/settings.py SETTINGS) plus the host's own.

param name string
param planName string
param location string
param tags object

@description('Resource id of the Function App\'s user-assigned identity.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID and the identity-based connections).')
param identityClientId string

param hostStorageName string
param hostStorageBlobEndpoint string
param deploymentContainerName string

param serviceBusFullyQualifiedNamespace string
param submissionQueueName string

param ledgerTableEndpoint string
param ledgerTableName string

param keyVaultUri string
param airflowPasswordSecretName string
@description('The signing key\'s secret: the bridge reads its versions and rotates it (docs/security.md).')
param signingKeySecretName string

param applicationInsightsConnectionString string

param workspaceSubscriptionId string
param workspaceResourceGroup string
param workspaceName string

param airflowUrl string
@description('The bridge\'s Airflow user (its password in Key Vault); empty in Entra mode.')
param airflowUsername string
@description('Entra mode: the application id URI of Airflow\'s app registration, for which the identity gets its token (docs/airflow-identity.md). Empty: the user and its password.')
param airflowAudience string

@description('Governance policy JSON (BRIDGE_POLICY).')
param policyJson string

@description('NCRONTAB schedule of the reconcile timer function (BRIDGE_RECONCILE_SCHEDULE).')
param reconcileSchedule string

@description('Grace before reconciliation first reads a job (BRIDGE_RECONCILE_AFTER_SECONDS).')
param reconcileAfterSeconds int

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@allowed([512, 2048, 4096])
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy for Flex Consumption exists only in some regions; Flex instances are placed by the platform and the bridge holds no state on them (Service Bus and Event Grid redeliver).
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: Event Grid cannot present client certificates when it delivers to the Event Grid trigger.
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the function over its public endpoint; this deployment creates no VNet or private endpoint.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales each function from zero per trigger; a fixed minimum instance count does not apply to the plan.
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support the App Service health check feature; the anonymous /api/health route serves external probes instead.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'bridge' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      runtime: { name: 'python', version: '3.11' }
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Host: AzureWebJobsStorage by identity (no connection string).
        { name: 'AzureWebJobsStorage__accountName', value: hostStorageName }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
        // Host: telemetry by identity (Application Insights local auth is disabled).
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsightsConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
        // The bridge (bridge/settings.py).
        { name: 'BRIDGE_SUBMISSION_QUEUE', value: submissionQueueName }
        { name: 'BRIDGE_SERVICEBUS__fullyQualifiedNamespace', value: serviceBusFullyQualifiedNamespace }
        { name: 'BRIDGE_SERVICEBUS__credential', value: 'managedidentity' }
        { name: 'BRIDGE_SERVICEBUS__clientId', value: identityClientId }
        { name: 'BRIDGE_AZUREML_SUBSCRIPTION_ID', value: workspaceSubscriptionId }
        { name: 'BRIDGE_AZUREML_RESOURCE_GROUP', value: workspaceResourceGroup }
        { name: 'BRIDGE_AZUREML_WORKSPACE', value: workspaceName }
        { name: 'BRIDGE_LEDGER_ENDPOINT', value: ledgerTableEndpoint }
        { name: 'BRIDGE_LEDGER_TABLE', value: ledgerTableName }
        { name: 'BRIDGE_AIRFLOW_URL', value: airflowUrl }
        // Airflow: the identity's Entra ID token for Airflow's app registration (no secret at
        // all), or the bridge's user and its password from Key Vault. Unused ones stay empty.
        { name: 'BRIDGE_AIRFLOW_AUTH', value: empty(airflowAudience) ? '' : 'entra' }
        { name: 'BRIDGE_AIRFLOW_AUDIENCE', value: airflowAudience }
        { name: 'BRIDGE_AIRFLOW_USERNAME', value: empty(airflowAudience) ? airflowUsername : '' }
        { name: 'BRIDGE_AIRFLOW_PASSWORD', value: empty(airflowAudience) ? '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${airflowPasswordSecretName}/)' : '' }
        // The signing key: read from Key Vault by the bridge itself (every minute, every version
        // not expired) and rotated on Key Vault's near-expiry event; no app-setting reference,
        // which App Service would re-read only once a day.
        { name: 'BRIDGE_KEY_VAULT_URL', value: keyVaultUri }
        { name: 'BRIDGE_SIGNING_KEY_SECRET', value: signingKeySecretName }
        { name: 'BRIDGE_POLICY', value: policyJson }
        { name: 'BRIDGE_RECONCILE_SCHEDULE', value: reconcileSchedule }
        { name: 'BRIDGE_RECONCILE_AFTER_SECONDS', value: string(reconcileAfterSeconds) }
        // host.json's functionTimeout, as the host reads it and the bridge derives its effect
        // lease from it (docs/reliability.md); a test keeps the two equal.
        { name: 'AzureFunctionsJobHost__functionTimeout', value: '00:05:00' }
        { name: 'AZURE_CLIENT_ID', value: identityClientId }
      ]
    }
  }
}

// Deployment goes through Entra ID (azd / az functionapp deploy with the package container), so
// basic-auth publishing credentials are switched off for both FTP and SCM.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
