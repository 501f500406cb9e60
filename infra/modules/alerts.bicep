// Alerts and the operations workbook (issue 18): a standard availability test on /api/health, one
// alert per signal an operator must act on, an optional action group, and a workbook over the
// same telemetry. docs/operate.md ("Alerts and the workbook") says what each alert means and the
// first thing to do. tests/infra/test_infra_alerts.py checks every query against the log lines
// the app really writes, so a renamed log line fails the tests instead of silencing an alert.
//
// Every log query runs against the Application Insights component (scope = the component), so it
// reads the classic tables: requests, traces, exceptions. Counts sum `itemCount`, which undoes
// adaptive sampling (host.json samples traces, not requests).
//
// Followed:
// * https://learn.microsoft.com/azure/templates/microsoft.insights/webtests (standard test: Request,
//   ValidationRules, Locations; the hidden-link tag ties it to the component)
// * https://learn.microsoft.com/azure/templates/microsoft.insights/metricalerts and
//   https://learn.microsoft.com/dotnet/api/microsoft.azure.management.monitor.models.webtestlocationavailabilitycriteria
//   (the availability alert: webTestId, componentId, failedLocationCount; scopes = test + component)
// * https://learn.microsoft.com/azure/templates/microsoft.insights/2021-08-01/scheduledqueryrules
//   (log alerts: criteria.allOf with query, timeAggregation, metricMeasureColumn, operator, threshold)
// * https://learn.microsoft.com/azure/templates/microsoft.insights/workbooks (serializedData, sourceId,
//   category 'workbook'; the name must be a GUID)
// * https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-storage-storageaccounts-queueservices-metrics
//   (why the poison alert is not a storage metric: QueueMessageCount has no per-queue dimension and
//   is sampled hourly, so sync-jobs and sync-jobs-poison are one number)

param location string
param tags object = {}

@description('Name of the Application Insights component the app sends its telemetry to.')
param applicationInsightsName string

@description('Name of the function app (its health function key is read at deploy time).')
param functionAppName string

@description('Default host name of the function app, e.g. func-cosell-x.azurewebsites.net.')
param functionAppHostName string

@description('Prefix of the alert, test, action group and workbook names.')
param namePrefix string

@description('Create the availability test on /api/health. Needs the code deployed first: the test gets its own key on the health function.')
param enableAvailabilityTest bool = false

// newGuid() is allowed only as a parameter default: a fresh random key on every deployment,
// written to the health function and to the test together, so it is in no file and no output.
@secure()
@description('The availability test\'s key on the health function; leave the default (random per deployment).')
param availabilityTestKey string = newGuid()

@description('Resource id of an existing action group every alert notifies; empty = none (see alertEmailAddress).')
param actionGroupId string = ''

@description('Used when actionGroupId is empty: create an action group that e-mails this address; empty = alerts fire without notifying anyone (they still show in Azure Monitor → Alerts).')
param alertEmailAddress string = ''

@minValue(1)
@description('Availability alert: fire when this many test locations fail at once (of the five).')
param availabilityFailedLocations int = 2

@minValue(1)
@description('Poison alert: jobs moved to sync-jobs-poison within 15 minutes.')
param poisonedJobsThreshold int = 1

@minValue(1)
@description('Failed function invocations (exceptions, 5xx) within 15 minutes.')
param failedInvocationsThreshold int = 5

@minValue(1)
@description('Partner Center webhook calls answered 401 within 15 minutes.')
param webhook401Threshold int = 3

@minValue(1)
@description('Token failures (Partner Center, Dataverse, the managed identity) within 15 minutes.')
param tokenFailuresThreshold int = 1

@minValue(5)
@description('poll_dataverse cursor alert: minutes without a saved cursor (health degrades after 3 timer periods + 1 minute).')
param pollCursorMaxAgeMinutes int = 20

@minValue(15)
@description('reconcile_partner_center cursor alert: minutes without a saved cursor.')
param reconcileCursorMaxAgeMinutes int = 60

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// --- Action group -------------------------------------------------------------------------------

var createActionGroup = empty(actionGroupId) && !empty(alertEmailAddress)
var actionGroupName = 'ag-${namePrefix}'
// Every alert below notifies exactly these (tests/infra checks each one uses this variable).
var createdActionGroupIds = createActionGroup ? [resourceId('Microsoft.Insights/actionGroups', actionGroupName)] : []
var actionGroupIds = empty(actionGroupId) ? createdActionGroupIds : [actionGroupId]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (createActionGroup) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cosell-sync' // at most 12 characters
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

// --- Availability test on /api/health -----------------------------------------------------------

// /api/health has auth level FUNCTION (function_app.py). The test has a key of its own on the
// health function (`availability-test`: it opens /api/health only, never the webhooks, and
// rotates with every deployment) and sends it in the x-functions-key header. The key is part of
// the test's definition, readable by whoever can read the resource group. Health answers 503
// when degraded, so the test fails on every problem health names (poison, stalled cursors, token
// failures, drift), not only when the app is down.
// https://learn.microsoft.com/azure/templates/microsoft.web/sites/functions/keys
var healthFunctionName = 'health'
var availabilityTestKeyName = 'availability-test'
var healthKeyValue = replace(availabilityTestKey, '-', '')
var healthPath = '/api/health'
var availabilityTestName = 'webtest-${namePrefix}-health'
// West Europe, North Europe, France Central, UK South, East US: the location ids of availability
// tests (https://azure.microsoft.com/resources/templates/dynamic-web-tests/ lists them).
var availabilityTestLocations = [
  'emea-nl-ams-azr'
  'emea-gb-db3-azr'
  'emea-fr-pra-edge'
  'emea-ru-msa-edge'
  'us-va-ash-azr'
]

resource healthFunction 'Microsoft.Web/sites/functions@2024-04-01' existing = {
  parent: functionApp
  name: healthFunctionName
}

resource healthKey 'Microsoft.Web/sites/functions/keys@2024-04-01' = if (enableAvailabilityTest) {
  parent: healthFunction
  name: availabilityTestKeyName
  value: healthKeyValue
}

resource availabilityTest 'Microsoft.Insights/webtests@2022-06-15' = if (enableAvailabilityTest) {
  name: availabilityTestName
  location: location
  // Required: links the test to the component (without it the portal does not show the test).
  tags: union(tags, { 'hidden-link:${applicationInsights.id}': 'Resource' })
  kind: 'standard'
  properties: {
    SyntheticMonitorId: availabilityTestName
    Name: 'Co-sell Sync /api/health'
    Description: 'GET /api/health every 5 minutes; 200 = healthy, 503 = degraded (problems in the body).'
    Enabled: true
    Kind: 'standard'
    Frequency: 300
    Timeout: 30
    RetryEnabled: true
    Locations: [for id in availabilityTestLocations: {
      Id: id
    }]
    Request: {
      RequestUrl: 'https://${functionAppHostName}${healthPath}'
      HttpVerb: 'GET'
      ParseDependentRequests: false
      FollowRedirects: false
      Headers: [
        {
          key: 'x-functions-key'
          value: healthKeyValue
        }
      ]
    }
    ValidationRules: {
      ExpectedHttpStatusCode: 200
      SSLCheck: true
      SSLCertRemainingLifetimeCheck: 14
    }
  }
  dependsOn: [
    healthKey // the function knows the key before the test sends it
  ]
}

resource availabilityAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (enableAvailabilityTest) {
  name: 'alert-${namePrefix}-health-unavailable'
  location: 'global'
  tags: tags
  properties: {
    description: '/api/health failed (not 200: degraded or down) from ${availabilityFailedLocations} or more locations. Open the health URL (docs/operate.md) and read `problems`.'
    severity: 1
    enabled: true
    scopes: [
      availabilityTest.id
      applicationInsights.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria'
      webTestId: availabilityTest.id
      componentId: applicationInsights.id
      failedLocationCount: availabilityFailedLocations
    }
    actions: [for id in actionGroupIds: {
      actionGroupId: id
    }]
  }
  dependsOn: [
    actionGroup
  ]
}

// --- Log alerts ---------------------------------------------------------------------------------

// Jobs that reached sync-jobs-poison. The depth itself is not in the telemetry: storage's
// QueueMessageCount is one hourly number for all queues of the account (see the link above), and
// /api/health's queue depths are not logged. So this alerts on the moves, which both writers log:
// the host after maxDequeueCount failed attempts (WebJobs QueueProcessor: "Message has reached
// MaxDequeueCount of 5. Moving message to queue 'sync-jobs-poison'.") and the worker for a
// message that is not a job (shared/triggers/worker.py). A queue that stays non-empty keeps
// /api/health at 503, which the availability test reports.
var poisonQuery = '''
traces
| where message contains "Moving message to queue 'sync-jobs-poison'"
    or message contains "moved to sync-jobs-poison"
| summarize poisoned = sum(itemCount) by bin(timestamp, 5m)
'''

// Function invocations that failed: an exception (timers, the queue worker, whose failed attempt
// the host retries) or an HTTP 5xx. An HTTP trigger's 4xx is an answer, not a failure (the
// webhook's 401s have their own alert), and /api/health answers 503 by design when degraded (the
// availability test covers it). UNCERTAIN: with the host's OpenTelemetry mode the requests rows
// come from the worker's spans; their names stay the function names.
var failedInvocationsQuery = '''
requests
| where success == false
| extend code = toint(resultCode)
| where isnull(code) or code < 400 or code >= 500
| where not(name == "health" and code == 503)
| summarize failed = sum(itemCount) by bin(timestamp, 5m)
'''

// Partner Center webhook calls answered 401: the signature was not verified (bad signature, an
// untrusted chain, verification not configured). The host answers a wrong or missing function
// key before the function runs, so those never reach this function's rows.
var webhook401Query = '''
requests
| where name == "partner_center_webhook" and resultCode == "401"
| summarize unauthorized = sum(itemCount) by bin(timestamp, 5m)
'''

// No token could be had, or a service refused ours. The app names the exception type in the
// worker's failed-attempt line ("sync_job: ... failed on attempt N with <Type>; the host will
// retry it") and in "drift scan failed: <Type>"; the timers' failures reach `exceptions`. The
// types: RefreshTokenRejected and PartnerCenterAuthError (shared/partner_center), Dataverse's
// AuthenticationFailed (shared/dataverse), and azure-identity's ClientAuthenticationError /
// CredentialUnavailableError (the managed identity's Dataverse token). /api/health's `tokens`
// status is not logged; a failed token check makes health 503 (the availability test).
var tokenFailuresQuery = '''
let token_errors = dynamic(["RefreshTokenRejected", "PartnerCenterAuthError", "AuthenticationFailed", "ClientAuthenticationError", "CredentialUnavailableError"]);
union
    (traces
        | where message contains " failed on attempt " or message startswith "drift scan failed: "
        | where message has_any (token_errors)),
    (exceptions
        | where type has_any (token_errors) or outerMessage has_any (token_errors) or innermostMessage has_any (token_errors))
| summarize failures = sum(itemCount) by bin(timestamp, 5m)
'''

// Minutes since a timer last saved its cursor: what /api/health reports as the cursor's
// age_seconds (health itself logs nothing). Each timer saves its cursor and then writes one
// summary line (shared/triggers/poll.py, reconcile.py); no line in the window means the timer
// stopped or fails every run, and the age is then counted from the window's start. (So an
// environment provisioned without its code fires these until the first timer run.)
// __PREFIX__ and __WORD__ are replaced per cursor below (multi-line strings do not interpolate).
var cursorAgeQueryTemplate = '''
let window = 6h;
traces
| where timestamp > ago(window)
| where message startswith "__PREFIX__" and message contains "__WORD__"
| summarize last_saved = max(timestamp)
| extend timestamp = coalesce(last_saved, ago(window))
| extend minutes_since = datetime_diff('minute', now(), timestamp)
'''

var cursorAlerts = [
  {
    name: 'poll_dataverse'
    prefix: 'poll_dataverse: '
    word: 'enqueued'
    maxAgeMinutes: pollCursorMaxAgeMinutes
  }
  {
    name: 'reconcile_partner_center'
    prefix: 'reconcile_partner_center: '
    word: 'referrals updated'
    maxAgeMinutes: reconcileCursorMaxAgeMinutes
  }
]

var logAlerts = [
  {
    name: 'poisoned-jobs'
    description: 'Jobs moved to sync-jobs-poison: nothing retries them. Run `cosell poison list` (the reason of each), fix the cause, then `cosell poison replay --all`.'
    severity: 2
    query: poisonQuery
    column: 'poisoned'
    threshold: poisonedJobsThreshold
  }
  {
    name: 'failed-invocations'
    description: 'Function invocations failed (exceptions or HTTP 5xx). Application Insights → Failures, or `requests | where success == false`; the worker\'s failed attempts name the error type.'
    severity: 2
    query: failedInvocationsQuery
    column: 'failed'
    threshold: failedInvocationsThreshold
  }
  {
    name: 'webhook-401'
    description: 'Partner Center webhook calls answered 401 (signature not verified): Partner Center changes arrive only with the reconcile timer. Read the "webhook answered 401 (...)" traces; `cosell webhook test`.'
    severity: 2
    query: webhook401Query
    column: 'unauthorized'
    threshold: webhook401Threshold
  }
  {
    name: 'token-failures'
    description: 'A Partner Center or Dataverse token could not be had or was refused. RefreshTokenRejected: a Referrals admin signs in again (docs/operate.md, Credentials that expire); otherwise check the app registration secret and the Dataverse application user.'
    severity: 1
    query: tokenFailuresQuery
    column: 'failures'
    threshold: tokenFailuresThreshold
  }
]

var logAlertNames = [for alert in logAlerts: 'alert-${namePrefix}-${alert.name}']
var cursorAlertNames = [for cursor in cursorAlerts: 'alert-${namePrefix}-cursor-${cursor.name}']

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in logAlerts: {
  name: 'alert-${namePrefix}-${alert.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Co-sell Sync: ${alert.name}'
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Total'
          metricMeasureColumn: alert.column
          operator: 'GreaterThanOrEqual'
          threshold: alert.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    actionGroup // named by resourceId() in actionGroupIds
  ]
}]

resource cursorAgeAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for cursor in cursorAlerts: {
  name: 'alert-${namePrefix}-cursor-${cursor.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Co-sell Sync: cursor ${cursor.name} stalled'
    description: 'The ${cursor.name} timer has not saved its cursor for ${cursor.maxAgeMinutes} minutes: it stopped or fails every run. `cosell status` (the cursor ages), then the timer\'s failures in Application Insights.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT10M'
    windowSize: 'PT6H'
    criteria: {
      allOf: [
        {
          query: replace(replace(cursorAgeQueryTemplate, '__PREFIX__', cursor.prefix), '__WORD__', cursor.word)
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'minutes_since'
          operator: 'GreaterThan'
          threshold: cursor.maxAgeMinutes
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: actionGroupIds
    }
  }
  dependsOn: [
    actionGroup // named by resourceId() in actionGroupIds
  ]
}]

// --- Workbook -----------------------------------------------------------------------------------

// The template's first item lists the log lines and columns its queries read.
var workbookTemplate = loadTextContent('alerts-workbook.json')

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, namePrefix, 'cosell-operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Co-sell Sync operations'
    description: 'Syncs by outcome, sync latency (p50/p95), conflicts, top errors, webhook answers and the /api/health test.'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: replace(workbookTemplate, '__APPLICATION_INSIGHTS_ID__', applicationInsights.id)
  }
}

output workbookName string = workbook.name
output workbookDisplayName string = workbook.properties.displayName
output availabilityTestName string = enableAvailabilityTest ? availabilityTestName : ''
output actionGroupIds array = actionGroupIds
output alertNames array = concat(
  enableAvailabilityTest ? ['alert-${namePrefix}-health-unavailable'] : [],
  logAlertNames,
  cursorAlertNames
)
