// Access to an existing Azure ML registry, for share_model (azure-ai-ml models.share: an import of
// a workspace model version into the registry) and for deploy of a registry's model
// (azureml://registries/<r>/models/<n>/versions/<v>) to the workspace's online endpoints
// (docs/lifecycle.md). Deployed into the registry's resource group; main.bicep deploys it only when
// a registry is named (modelRegistryName).
//
// Role: "AzureML Registry User" (its id in infra/roles.json, as for every role here): the actions
// Microsoft.MachineLearningServices/registries/read and registries/assets/*. Source: Microsoft's
// built-in roles reference, articles/role-based-access-control/built-in-roles/ai-machine-learning.md
// (MicrosoftDocs/azure-docs; https://learn.microsoft.com/azure/role-based-access-control/built-in-roles),
// and Azure ML's how-to-assign-roles.md (MicrosoftDocs/azure-ai-docs), which names it the
// registry's user-level role. Commits cited in docs/deploy.md, "Role assignments".

@description('Name of the existing Azure ML registry.')
param registryName string

@description('Principal id of the Function App identity.')
param functionPrincipalId string

var roles = loadJsonContent('../roles.json')

resource registry 'Microsoft.MachineLearningServices/registries@2024-04-01' existing = {
  name: registryName
}

// Why: share_model writes model versions into the registry and deploy reads them from it
// (registries/assets/*, registries/read). AzureML Registry User cannot create, change or delete the
// registry itself, nor assign roles; it is the only built-in role short of Contributor or Owner
// that can, and it is scoped to this one registry.
resource registryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, functionPrincipalId, roles['AzureML Registry User'])
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['AzureML Registry User'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}
