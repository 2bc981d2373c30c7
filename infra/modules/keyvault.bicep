// Key Vault for the bridge's secrets (Airflow password, submission signing key). RBAC mode and
// purge protection; the template creates no secret values: the operator sets them (docs/deploy.md).

param name string
param location string
param tags object

@description('Principal id of the Function App identity, which resolves Key Vault references.')
param functionPrincipalId string

@description('Optional principal id of the operator who sets the secret values.')
param operatorPrincipalId string = ''

var roles = loadJsonContent('../roles.json')

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: App Service resolves Key Vault references over the public endpoint unless the app is VNet-integrated, which this deployment does not do; access is RBAC-only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

// Why: the Function App resolves @Microsoft.KeyVault(...) app settings with its identity; this
// role reads secret values and nothing else (no keys, no certificates, no writes).
resource functionSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionPrincipalId, roles['Key Vault Secrets User'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Key Vault Secrets User'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why: the operator (a person, not a runtime identity) writes the secret values after deployment.
resource operatorSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(vault.id, operatorPrincipalId, roles['Key Vault Secrets Officer'])
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Key Vault Secrets Officer'])
    principalId: operatorPrincipalId
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
