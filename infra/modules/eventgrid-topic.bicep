// The Event Grid system topic of the existing Azure ML workspace. A workspace can have only one
// system topic: if it already has one, pass its name and this deployment adopts it (a PUT with the
// same source updates it in place and adds the identity used for dead-lettering).

param name string
param tags object
param workspaceName string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: workspace.location
  tags: tags
  // The topic's own identity writes dead letters (deadLetterWithResourceIdentity): no storage key.
  identity: { type: 'SystemAssigned' }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
