// The subscription that delivers ARM writes of the workspace's online endpoints and deployments
// to on_azureml_event, from the resource group's system topic (eventgrid-resource-group-topic.bicep).
//
// An event is only a hint to read the resource's provisioningState (docs/lifecycle.md): ARM raises
// several per long-running write, tied by data.correlationId, and the sweep covers none at all.
// Filters (Event Grid's string comparisons are case-insensitive; ARM spells the subject's
// `resourcegroups` in lower case where resourceId() writes `resourceGroups`):
// - event types ResourceWriteSuccess, ResourceWriteFailure and ResourceWriteCancel (the type, not
//   data.status, says how a write went: bridge/events.py);
// - subjectBeginsWith <workspace id>/onlineEndpoints/: the subject is the written resource's ARM
//   id, so this admits the workspace's online endpoints and their deployments, and nothing of
//   another workspace (the trailing slash keeps out a workspace whose name merely begins so) or
//   of any other resource of the group.

param topicName string

@description('Name of the Azure ML workspace whose endpoints are watched (in this resource group).')
param workspaceName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string

param deadLetterStorageAccountId string
param deadLetterContainerName string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource endpointWrites 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'bridge-online-endpoint-writes'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        // The Python Event Grid trigger takes one event per invocation.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceWriteFailure'
        'Microsoft.Resources.ResourceWriteCancel'
      ]
      subjectBeginsWith: '${workspace.id}/onlineEndpoints/'
      isSubjectCaseSensitive: false
      enableAdvancedFilteringOnArrays: false
    }
    // As the job events' subscription: an Airflow outage of up to a day loses no event.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = endpointWrites.name
