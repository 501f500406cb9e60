// The app's storage account: host storage (timer locks, keys, diagnostics), the deployment
// package container of Flex Consumption, the sync-jobs queues and the state tables (SPEC 3, 5).
// Shared-key access is off: every client (host, our SDK code, operators) uses Entra ID.

param name string
param location string
param tags object = {}

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

// Must equal shared.jobs.SYNC_JOBS_QUEUE / POISON_QUEUE (tests/infra checks it). The poison queue
// is declared up front, although the host would create it on demand, so that it can be watched
// (cosell poison list, /api/health) before the first failure.
var queueNames = [
  'sync-jobs'
  'sync-jobs-poison'
]

// Must equal shared.state.TABLE_NAMES (tests/infra checks it).
var tableNames = [
  'synclinks'
  'synccursors'
  'synchistory'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// Children are declared with `parent:` rather than nested: same deployment, and pycep (the
// offline parser the tests use) keeps only the last of several nested siblings.
resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueServices 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueServices
  name: queueName
}]

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableServices
  name: tableName
}]

output name string = storage.name
output id string = storage.id
// Endpoints without the trailing slash, as the identity-based connection settings expect.
output blobEndpoint string = 'https://${storage.name}.blob.${environment().suffixes.storage}'
output queueEndpoint string = 'https://${storage.name}.queue.${environment().suffixes.storage}'
output tableEndpoint string = 'https://${storage.name}.table.${environment().suffixes.storage}'
output deploymentContainerName string = deploymentContainerName
