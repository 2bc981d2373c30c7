// Log Analytics and workspace-based Application Insights, both with local (key) auth disabled:
// telemetry is accepted only from Entra ID principals, so the Function App writes by identity.

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object

@description('Principal id of the Function App identity that sends telemetry.')
param functionPrincipalId string

var roles = loadJsonContent('../roles.json')

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
    features: { disableLocalAuth: true }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

// Why: with local auth disabled, ingestion needs an Entra token whose principal may publish metrics
// to this component; this role is exactly that and grants no read access to telemetry.
resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, functionPrincipalId, roles['Monitoring Metrics Publisher'])
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Monitoring Metrics Publisher'])
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output applicationInsightsName string = insights.name
output connectionString string = insights.properties.ConnectionString
