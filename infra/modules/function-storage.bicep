// Storage that belongs to the Functions host: AzureWebJobsStorage (host keys, leases) and the
// Flex Consumption deployment package container. Kept apart from the ledger account so that the
// broad blob role the host needs does not reach the ledger or the Event Grid dead letters.

param name string
param location string
param tags object

@description('Container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

@description('Principal id of the Function App identity.')
param functionPrincipalId string

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its host storage over the public endpoint; shared keys are disabled, so every request needs an Entra token.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public network access is on, key access is off.
  // checkov:skip=CKV_AZURE_206: Locally redundant on purpose: the account holds only state the platform re-creates (host keys, leases) and the package the next deployment uploads again.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
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

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

// Why: the Functions host creates and leases its own containers (azure-webjobs-hosts,
// azure-webjobs-secrets) in AzureWebJobsStorage and reads the deployment package; creating
// containers needs Owner-level blob data rights on the account. Scoped to this account only.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, functionPrincipalId, roles['Storage Blob Data Owner'])
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Storage Blob Data Owner'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
