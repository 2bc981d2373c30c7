// The submissions queue: Airflow workers send, the Function App's on_submission receives.
// Local (SAS) auth is off: both sides authenticate with Entra ID identities.

param name string
param location string
param tags object

@description('Queue name; the Function App reads it from BRIDGE_SUBMISSION_QUEUE.')
param queueName string

@description('Principal id of the Function App identity (receiver).')
param functionPrincipalId string

@description('Optional principal id of the Airflow workers\' identity (sender). Empty: no sender role is assigned.')
param airflowWorkerPrincipalId string = ''

var roles = loadJsonContent('../roles.json')

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: queueName
  properties: {
    // A resent submission carries the same message id (the submission id): Service Bus drops it
    // within this window; past it, the deterministic job name still prevents a second job.
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    // Creating one Azure ML job takes a few seconds (plus a cold start importing azure-ai-ml);
    // one minute covers that with margin, and the host renews the lock for longer work.
    lockDuration: 'PT1M'
    // An abandoned message is redelivered at once, so this count is the whole retry budget for
    // transient failures (Azure ML 429/5xx, Airflow down) before the message is dead-lettered.
    maxDeliveryCount: 10
    // A submission nobody processed within a day is stale for its DAG run: keep it, visibly,
    // in the dead-letter queue instead of dropping it.
    defaultMessageTimeToLive: 'P1D'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
    enablePartitioning: false
    maxSizeInMegabytes: 1024
  }
}

// Why: on_submission's Service Bus trigger receives, completes and abandons messages; this role
// allows exactly that. Scoped to the submissions queue, not the namespace.
resource functionReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, functionPrincipalId, roles['Azure Service Bus Data Receiver'])
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Receiver'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why: a DAG task sends one submission per job; sending is all Airflow does with the bridge.
// Scoped to the submissions queue only: Airflow cannot read or purge it.
resource airflowSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(airflowWorkerPrincipalId)) {
  name: guid(queue.id, airflowWorkerPrincipalId, roles['Azure Service Bus Data Sender'])
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Azure Service Bus Data Sender'])
    principalId: airflowWorkerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output namespaceName string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
output queueName string = queue.name
