// The subscription that delivers terminal job events of bridge-submitted jobs to on_azureml_event.
//
// Filters (all string comparisons in Event Grid are case-insensitive, so "failed" and "Failed"
// match alike):
// - event types RunCompleted and RunStatusChanged;
// - data.runTags.bridge_submission IsNotNull: only jobs the bridge created (the tag name has no
//   dot, which Event Grid filter keys cannot address);
// - data.runStatus StringNotIn <the statuses known to be non-terminal>. StringNotIn is the one
//   string operator that matches when the key is absent, so RunCompleted (which has no runStatus)
//   still passes, and a status Azure ML adds later is delivered rather than silently dropped;
//   on_azureml_event ignores whatever it cannot route.

param topicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string

param deadLetterStorageAccountId string
param deadLetterContainerName string

var submissionTagKey = 'data.runTags.bridge_submission'
var nonTerminalStatuses = [
  'NotStarted'
  'Starting'
  'Provisioning'
  'Preparing'
  'Queued'
  'Running'
  'Finalizing'
  'CancelRequested'
]

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource toBridge 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'bridge-terminal-job-events'
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
        'Microsoft.MachineLearningServices.RunCompleted'
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
      enableAdvancedFilteringOnArrays: false
      advancedFilters: [
        {
          operatorType: 'IsNotNull'
          key: submissionTagKey
        }
        {
          operatorType: 'StringNotIn'
          key: 'data.runStatus'
          values: nonTerminalStatuses
        }
      ]
    }
    // Event Grid's longest schedule: an Airflow outage of up to a day loses no event.
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

output name string = toBridge.name
