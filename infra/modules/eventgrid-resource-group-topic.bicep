// The Event Grid system topic of the workspace's resource group: ARM raises
// Microsoft.Resources.ResourceWrite{Success,Failure,Cancel} there for every write (PUT, PATCH) of a
// resource of the group, online endpoints and deployments among them. A resource group can have
// only one system topic: if it already has one, pass its name and this deployment adopts it, as
// eventgrid-topic.bicep does for the workspace's.

param name string
param tags object

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  // Resource group and subscription topics are not regional.
  location: 'global'
  tags: tags
  // The topic's own identity writes dead letters (deadLetterWithResourceIdentity): no storage key.
  identity: { type: 'SystemAssigned' }
  properties: {
    source: resourceGroup().id
    topicType: 'Microsoft.Resources.ResourceGroups'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
