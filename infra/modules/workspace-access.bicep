// Access to the existing Azure ML workspace. Deployed into the workspace's resource group, which
// may differ from the bridge's.

param workspaceName string

@description('Principal id of the Function App identity.')
param functionPrincipalId string

var roles = loadJsonContent('../roles.json')

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

// Why: on_submission creates and reads jobs (PUT/GET workspaces/jobs) that use existing
// environments and compute. AzureML Data Scientist allows that but not creating or deleting
// compute, changing the workspace, or assigning roles; it is the narrowest built-in role that can.
resource jobSubmitter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, functionPrincipalId, roles['AzureML Data Scientist'])
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['AzureML Data Scientist'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}
