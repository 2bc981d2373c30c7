// The signing key rotates itself (docs/security.md): Key Vault announces on its system topic that
// the key's current version nears its expiry (Microsoft.KeyVault.SecretNearExpiry, 30 days ahead),
// and on_key_vault_event writes a new version. Deployed in the second pass, once the operator has
// set the secret's first version (docs/deploy.md): its role is scoped to that secret.
//
// - Key Vault Secrets Officer on the one secret: the Function App's identity reads its versions
//   and writes new ones, and nothing else in the vault. The vault-wide Secrets User role of
//   keyvault.bicep still lets it read the secrets its app settings reference.
// - The subscription takes SecretNearExpiry and SecretExpired of that secret alone. A notice that
//   never comes loses nothing: the reconcile timer rotates a key that is due, whatever Event Grid
//   delivered (bridge/rotation.py), so no dead-letter destination is needed here.

param vaultName string
param location string
param tags object

@description('Name of the signing key\'s secret.')
param secretName string

@description('Principal id of the Function App identity.')
param functionPrincipalId string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid-triggered function that rotates the key.')
param functionName string

var roles = loadJsonContent('../roles.json')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: secretName
}

// Why: the bridge writes the signing key's new versions when it rotates it; scoped to the secret.
resource rotator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, functionPrincipalId, roles['Key Vault Secrets Officer'])
  scope: secret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Key Vault Secrets Officer'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-${vaultName}'
  location: location
  tags: tags
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource toBridge 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'bridge-signing-key-expiry'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
      ]
      // The subject is the secret's name: this one, exactly.
      enableAdvancedFilteringOnArrays: false
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'subject'
          values: [ secretName ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
  dependsOn: [rotator]
}

output topicName string = topic.name
