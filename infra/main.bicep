// airflow-azureml-bridge: everything the bridge needs in a subscription that already has an
// Azure ML workspace and an Airflow deployment. Deploy into the bridge's resource group; the
// workspace may live in another resource group of the same subscription.
//
// Two passes (azure.yaml's postdeploy hook does the second): Event Grid refuses a subscription
// to a function that does not exist yet, so the event subscriptions are created only once the code
// is deployed (deployEventSubscription=true). See docs/deploy.md.

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Environment name (azd); seeds resource names and tags.')
param environmentName string

@description('Region for the bridge\'s resources (the system topic follows the workspace\'s region).')
param location string = resourceGroup().location

@description('Name of the existing Azure ML workspace.')
param workspaceName string

@description('Resource group of the workspace; defaults to this deployment\'s resource group.')
param workspaceResourceGroup string = resourceGroup().name

@description('Name of an existing Azure ML registry the bridge shares models to and deploys models from (share_model, deploy of azureml://registries/...). Empty: no registry access is granted.')
param modelRegistryName string = ''

@description('Resource group of that registry (same subscription); defaults to the workspace\'s resource group.')
param modelRegistryResourceGroup string = ''

@description('Name of the workspace\'s Event Grid system topic. Set it if the workspace already has one.')
param systemTopicName string = ''

@description('Name of the Event Grid system topic of the workspace\'s resource group (resource write events). Set it if the group already has one.')
param resourceGroupTopicName string = ''

@description('Airflow base URL the Function App calls (REST API v2), for example https://airflow.example.com.')
param airflowUrl string

@description('Airflow user the bridge authenticates as; its password goes into Key Vault. Empty in Entra mode (airflowAudience).')
param airflowUsername string = ''

@description('Entra mode: the application id URI of Airflow\'s app registration (infra/airflow/entra-app.sh makes it and assigns its app role to the Function App\'s identity). The bridge then sends that identity\'s Entra ID token, and holds no Airflow password or token. Empty: airflowUsername and its password.')
param airflowAudience string = ''

@description('Principal (object) id of the identity Airflow workers use to send submissions. Empty: assign the role later.')
param airflowWorkerPrincipalId string = ''

@description('Airflow outside Azure: issuer/subject pairs ([{ name, issuer, subject }]) that an Airflow identity made here trusts (workload identity federation); it gets the sender role instead of airflowWorkerPrincipalId. Empty: none. See docs/workload-identity.md.')
param airflowFederatedCredentials array = []

@description('Principal (object) id of the operator (azd sets it): may set secrets and read the ledger.')
param operatorPrincipalId string = ''

@description('Governance policy JSON for BRIDGE_POLICY. Empty means no restriction beyond the schema.')
param policyJson string = ''

@description('Create the Event Grid subscriptions; needs the function code deployed first.')
param deployEventSubscription bool = false

@description('Name of the submissions queue.')
param submissionQueueName string = 'submissions'

@description('Name of the ledger table.')
param ledgerTableName string = 'bridgeledger'

@description('NCRONTAB schedule of the reconcile sweep (BRIDGE_RECONCILE_SCHEDULE): every 5 minutes.')
param reconcileSchedule string = '0 */5 * * * *'

@description('Seconds after acceptance before the sweep first reads a job (BRIDGE_RECONCILE_AFTER_SECONDS).')
@minValue(30)
param reconcileAfterSeconds int = 600

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

// The function function_app.py registers with @app.event_grid_trigger.
var eventFunctionName = 'on_azureml_event'
var keyVaultFunctionName = 'on_key_vault_event'
var airflowPasswordSecretName = 'airflow-password' // pragma: allowlist secret (a name)
var signingKeySecretName = 'signing-key' // pragma: allowlist secret (a name)
var deadLetterContainerName = 'eventgrid-deadletter'

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName, application: 'airflow-azureml-bridge' }
var functionAppName = 'func-bridge-${token}'
var topicName = empty(systemTopicName) ? 'evgt-${replace(workspaceName, '_', '-')}' : systemTopicName
// A system topic's name takes letters, digits and hyphens; a resource group's also _ . ( ).
var groupTopicName = empty(resourceGroupTopicName) ? 'evgt-${replace(replace(replace(replace(workspaceResourceGroup, '_', '-'), '.', '-'), '(', '-'), ')', '-')}' : resourceGroupTopicName
var registryResourceGroup = empty(modelRegistryResourceGroup) ? workspaceResourceGroup : modelRegistryResourceGroup

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-bridge-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-bridge-${token}'
    applicationInsightsName: 'appi-bridge-${token}'
    location: location
    tags: tags
    functionPrincipalId: identity.outputs.principalId
  }
}

module functionStorage 'modules/function-storage.bicep' = {
  name: 'function-storage'
  params: {
    name: 'stfn${token}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package'
    functionPrincipalId: identity.outputs.principalId
  }
}

module topic 'modules/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    name: topicName
    tags: tags
    workspaceName: workspaceName
  }
}

// ARM writes of the workspace's online endpoints and deployments (docs/lifecycle.md).
module groupTopic 'modules/eventgrid-resource-group-topic.bicep' = {
  name: 'eventgrid-resource-group-topic'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    name: groupTopicName
    tags: tags
  }
}

module ledgerStorage 'modules/ledger-storage.bicep' = {
  name: 'ledger-storage'
  params: {
    name: 'stlg${token}'
    location: location
    tags: tags
    ledgerTableName: ledgerTableName
    deadLetterContainerName: deadLetterContainerName
    functionPrincipalId: identity.outputs.principalId
    deadLetterWriterPrincipalId: topic.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
  }
}

module groupTopicDeadLetters 'modules/eventgrid-deadletter-writer.bicep' = {
  name: 'eventgrid-resource-group-deadletter'
  params: {
    storageAccountName: ledgerStorage.outputs.name
    deadLetterContainerName: ledgerStorage.outputs.deadLetterContainerName
    deadLetterWriterPrincipalId: groupTopic.outputs.principalId
  }
}

// Workers outside Azure federate into an identity of their own; inside Azure they bring theirs.
module airflowIdentity 'modules/airflow-identity.bicep' = if (!empty(airflowFederatedCredentials)) {
  name: 'airflow-identity'
  params: {
    name: 'id-airflow-${token}'
    location: location
    tags: tags
    federatedCredentials: airflowFederatedCredentials
  }
}

var airflowSenderPrincipalId = empty(airflowFederatedCredentials) ? airflowWorkerPrincipalId : airflowIdentity.outputs.principalId

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    name: 'sb-bridge-${token}'
    location: location
    tags: tags
    queueName: submissionQueueName
    functionPrincipalId: identity.outputs.principalId
    airflowWorkerPrincipalId: airflowSenderPrincipalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: 'kv-bridge-${token}'
    location: location
    tags: tags
    functionPrincipalId: identity.outputs.principalId
    operatorPrincipalId: operatorPrincipalId
  }
}

module workspaceAccess 'modules/workspace-access.bicep' = {
  name: 'workspace-access'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    workspaceName: workspaceName
    functionPrincipalId: identity.outputs.principalId
  }
}

// Only with a registry named: AzureML Registry User on that one registry (docs/lifecycle.md).
module registryAccess 'modules/registry-access.bicep' = if (!empty(modelRegistryName)) {
  name: 'registry-access'
  scope: resourceGroup(registryResourceGroup)
  params: {
    registryName: modelRegistryName
    functionPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: functionAppName
    planName: 'plan-bridge-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostStorageName: functionStorage.outputs.name
    hostStorageBlobEndpoint: functionStorage.outputs.blobEndpoint
    deploymentContainerName: functionStorage.outputs.deploymentContainerName
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    submissionQueueName: serviceBus.outputs.queueName
    ledgerTableEndpoint: ledgerStorage.outputs.tableEndpoint
    ledgerTableName: ledgerStorage.outputs.ledgerTableName
    keyVaultUri: keyVault.outputs.uri
    airflowPasswordSecretName: airflowPasswordSecretName
    signingKeySecretName: signingKeySecretName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    workspaceSubscriptionId: subscription().subscriptionId
    workspaceResourceGroup: workspaceResourceGroup
    workspaceName: workspaceName
    airflowUrl: airflowUrl
    airflowUsername: airflowUsername
    airflowAudience: airflowAudience
    policyJson: empty(policyJson) ? '{}' : policyJson
    reconcileSchedule: reconcileSchedule
    reconcileAfterSeconds: reconcileAfterSeconds
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host must find its roles in place on first start.
  dependsOn: [workspaceAccess, registryAccess]
}

// The signing key rotates itself: its role on the secret and Key Vault's near-expiry events. In
// the second pass, when the operator has set the secret's first version.
module keyRotation 'modules/keyvault-rotation.bicep' = if (deployEventSubscription) {
  name: 'keyvault-rotation'
  params: {
    vaultName: keyVault.outputs.name
    location: location
    tags: tags
    secretName: signingKeySecretName
    functionPrincipalId: identity.outputs.principalId
    functionAppId: functionApp.outputs.id
    functionName: keyVaultFunctionName
  }
}

module eventSubscription 'modules/eventgrid-subscription.bicep' = if (deployEventSubscription) {
  name: 'eventgrid-subscription'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    topicName: topic.outputs.name
    functionAppId: functionApp.outputs.id
    functionName: eventFunctionName
    deadLetterStorageAccountId: ledgerStorage.outputs.id
    deadLetterContainerName: ledgerStorage.outputs.deadLetterContainerName
  }
}

module modelSubscription 'modules/eventgrid-model-subscription.bicep' = if (deployEventSubscription) {
  name: 'eventgrid-model-subscription'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    topicName: topic.outputs.name
    functionAppId: functionApp.outputs.id
    functionName: eventFunctionName
    deadLetterStorageAccountId: ledgerStorage.outputs.id
    deadLetterContainerName: ledgerStorage.outputs.deadLetterContainerName
  }
}

module resourceSubscription 'modules/eventgrid-resource-subscription.bicep' = if (deployEventSubscription) {
  name: 'eventgrid-resource-subscription'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    topicName: groupTopic.outputs.name
    workspaceName: workspaceName
    functionAppId: functionApp.outputs.id
    functionName: eventFunctionName
    deadLetterStorageAccountId: ledgerStorage.outputs.id
    deadLetterContainerName: ledgerStorage.outputs.deadLetterContainerName
  }
  // The topic's identity must be able to dead-letter from the first delivery on.
  dependsOn: [groupTopicDeadLetters]
}

// For the operator.
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
// The secrets an operator puts in Key Vault: in Entra mode, no Airflow password.
output AZURE_KEY_VAULT_SECRETS array = concat(empty(airflowAudience) ? [airflowPasswordSecretName] : [], [signingKeySecretName])
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output LEDGER_TABLE_ENDPOINT string = ledgerStorage.outputs.tableEndpoint
output LEDGER_TABLE string = ledgerStorage.outputs.ledgerTableName
output EVENTGRID_DEADLETTER_URL string = ledgerStorage.outputs.deadLetterContainerUrl
output EVENTGRID_SYSTEM_TOPIC string = topic.outputs.name
output EVENTGRID_RESOURCE_GROUP_TOPIC string = groupTopic.outputs.name
output EVENT_SUBSCRIPTION_DEPLOYED bool = deployEventSubscription
output SERVICEBUS_NAMESPACE string = serviceBus.outputs.namespaceName

// For the Airflow side (docs/deploy.md, "Airflow side").
output AIRFLOW_BRIDGE_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output AIRFLOW_BRIDGE_SUBMISSION_QUEUE string = serviceBus.outputs.queueName
output AIRFLOW_BRIDGE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
// Workload identity federation: the workers' AZURE_CLIENT_ID and AZURE_TENANT_ID (empty without it).
output AIRFLOW_AZURE_CLIENT_ID string = empty(airflowFederatedCredentials) ? '' : airflowIdentity.outputs.clientId
output AIRFLOW_AZURE_TENANT_ID string = tenant().tenantId
