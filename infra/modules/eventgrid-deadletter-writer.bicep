// Lets one more Event Grid system topic dead-letter into the bridge's dead-letter container
// (ledger-storage.bicep grants the workspace topic's identity the same role there).

@description('Name of the storage account holding the dead-letter container.')
param storageAccountName string

@description('Container Event Grid writes dead-lettered events to.')
param deadLetterContainerName string

@description('Principal id of the Event Grid system topic identity that writes dead letters.')
param deadLetterWriterPrincipalId string

var roles = loadJsonContent('../roles.json')

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobs
  name: deadLetterContainerName
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
