// The subscription that delivers ModelRegistered events of the workspace to on_azureml_event, from
// the workspace's system topic (eventgrid-topic.bicep): models registered anywhere (a pipeline
// step, Studio, the SDK) reach Airflow as azureml://<workspace>/models/<name> (docs/lifecycle.md).
//
// A subscription of its own: the job events' subscription (eventgrid-subscription.bicep) keeps
// only subjects ending in the bridge's job-name suffix, and a model's subject,
// models/<name>:<version>, never does. No subject filter here: every payload found says
// models/<name>:<version>, but nothing documents the subject of a v2 model version, and the
// event type alone is narrow enough (one event per registration).

param topicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string

param deadLetterStorageAccountId string
param deadLetterContainerName string

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource modelsToBridge 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'bridge-model-registered'
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
        'Microsoft.MachineLearningServices.ModelRegistered'
      ]
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

output name string = modelsToBridge.name
