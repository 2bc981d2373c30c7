// The subscription that delivers terminal job events of bridge-submitted jobs to on_azureml_event.
//
// Filters (all string comparisons in Event Grid are case-insensitive, so "failed" and "Failed"
// match alike):
// - event types RunCompleted and RunStatusChanged;
// - subjectEndsWith the bridge's job-name suffix: the subject is experiments/{id}/runs/{job name}
//   and every job the bridge creates is named <dag>-<hash>-airflow (bridge/contracts.py). The
//   subject is an envelope field whose spelling Azure fixes. A filter on the submission tag would
//   have to name data.runTags, which real RunCompleted payloads spell RunTags, and whether filter
//   keys match case-insensitively is not documented. A foreign job whose name happens to end so
//   costs one function call and one ledger read, and is ignored;
// - data.runStatus StringNotIn <the statuses known to be non-terminal>. StringNotIn is the one
//   string operator that matches when the key is absent, so RunCompleted (which has no runStatus)
//   still passes, and so would a RunStatusChanged whose key were spelled otherwise: the doubt
//   costs a delivery, never an event. A status Azure ML adds later is delivered rather than
//   silently dropped; on_azureml_event ignores whatever it cannot route.
// What this filter lets slip (no event for Canceled, a dead-lettered delivery) the reconcile
// timer finds.

param topicName string

@description('Resource id of the Function App.')
param functionAppId string

@description('Name of the Event Grid-triggered function.')
param functionName string

param deadLetterStorageAccountId string
param deadLetterContainerName string

// The suffix of every job name the bridge gives (bridge/contracts.py JOB_NAME_SUFFIX; a test
// keeps the two equal).
var jobNameSuffix = '-airflow'
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
      subjectEndsWith: jobNameSuffix
      isSubjectCaseSensitive: false
      enableAdvancedFilteringOnArrays: false
      advancedFilters: [
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
