// Storage for the bridge's own state: the ledger table (one record per job and per side effect)
// and the container Event Grid dead-letters undeliverable events into.

param name string
param location string
param tags object

@description('Ledger table name; the Function App reads it from BRIDGE_LEDGER_TABLE.')
param ledgerTableName string

@description('Container Event Grid writes dead-lettered events to.')
param deadLetterContainerName string

@description('Principal id of the Function App identity.')
param functionPrincipalId string

@description('Principal id of the Event Grid system topic identity that writes dead letters.')
param deadLetterWriterPrincipalId string

@description('Optional principal id of the operator who inspects the ledger and dead letters.')
param operatorPrincipalId string = ''

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: The Function App (no VNet integration) and Event Grid dead-lettering reach the account over its public endpoint; shared keys are disabled, so every request needs an Entra token.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public network access is on, key access is off.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  // Geo-redundant: the ledger is what keeps a side effect from happening twice.
  sku: { name: 'Standard_GRS' }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledger 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: ledgerTableName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deadLetterContainerName
  properties: { publicAccess: 'None' }
}

// Why: the bridge claims, updates and reads ledger records (conditional writes with etags).
// Scoped to the ledger table itself, not the account: no other table is reachable.
resource ledgerWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledger.id, functionPrincipalId, roles['Storage Table Data Contributor'])
  scope: ledger
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Table Data Contributor'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why: Event Grid dead-letters with the system topic's identity (deadLetterWithResourceIdentity),
// which must write blobs. Scoped to the dead-letter container only.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, deadLetterWriterPrincipalId, roles['Storage Blob Data Contributor'])
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Contributor'])
    principalId: deadLetterWriterPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why: an operator verifies the flow by reading ledger records; read-only, ledger table only.
resource operatorLedgerReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(ledger.id, operatorPrincipalId, roles['Storage Table Data Reader'])
  scope: ledger
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Table Data Reader'])
    principalId: operatorPrincipalId
  }
}

// Why: an operator reads dead-lettered events to replay them; read-only, that container only.
resource operatorDeadLetterReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(deadLetters.id, operatorPrincipalId, roles['Storage Blob Data Reader'])
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Reader'])
    principalId: operatorPrincipalId
  }
}

output id string = account.id
output name string = account.name
output tableEndpoint string = account.properties.primaryEndpoints.table
output ledgerTableName string = ledger.name
output deadLetterContainerName string = deadLetters.name
output deadLetterContainerUrl string = '${account.properties.primaryEndpoints.blob}${deadLetters.name}'
