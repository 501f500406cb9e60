// Co-sell Sync on Azure: one resource group holding a Flex Consumption function app (Python 3.11)
// that runs as a user-assigned managed identity, its storage account (no shared keys), Key Vault
// for the Partner Center credentials, Log Analytics + Application Insights (Entra auth), and the
// alerts and operations workbook over that telemetry (modules/alerts.bicep).
//
// Deploy with `azd up` (main.parameters.json) or, per environment,
//   az deployment sub create -l <region> -f infra/main.bicep -p infra/main.staging.parameters.json
// See docs/deploy.md. Plain resource declarations only (no registry modules), so the files parse
// and test offline.

targetScope = 'subscription'

@minLength(1)
@maxLength(32)
@description('Environment name (e.g. cosell-staging); names the resource group and seeds resource names.')
param environmentName string

@minLength(1)
@description('Azure region for all resources, e.g. westeurope.')
param location string

@description('Resource group to create or reuse; default rg-<environmentName>.')
param resourceGroupName string = ''

// --- SPEC 6 settings -------------------------------------------------------------------------

@description('Dataverse environment URL, e.g. https://contoso.crm.dynamics.com.')
param dataverseUrl string

param partnerCenterApiUrl string = 'https://api.partner.microsoft.com/v1.0/engagements'
param partnerCenterWebhookApiUrl string = 'https://api.partnercenter.microsoft.com/webhooks/v1'

@description('NCRONTAB (6 fields, UTC) of poll_dataverse.')
param dataversePollSchedule string = '0 */1 * * * *'

@description('NCRONTAB (6 fields, UTC) of reconcile_partner_center.')
param partnerCenterReconcileSchedule string = '0 */15 * * * *'

@allowed([
  'newest'
  'partner_center'
  'crm'
])
param conflictPolicy string = 'newest'

param showSyncMarkInName bool = true
param syncCosellOnly bool = true
param crmDealValueField string = 'estimatedvalue'
param crmCountryField string = 'address1_country'
@description('The declarative mapping as JSON text (SPEC 13); empty = the built-in mapping.')
param crmMapping string = ''
@description('Or: the path of a JSON mapping file deployed with the app, relative to its root.')
param crmMappingFile string = ''
param crmColumnPrefix string = 'cosell_'
param referralLinkTemplate string = 'https://partner.microsoft.com/referrals/v2/inbox?id={id}'

@description('Hosts the webhook signing certificate may be downloaded from (comma-separated; *.x allows subdomains).')
param webhookCertHostAllowlist string = '3psostorageacct.blob.core.windows.net'

@description('PEM certificate(s) of the roots the webhook signing certificate must chain to. Without them every signed webhook is refused (401) and only the reconcile timer syncs.')
param webhookTrustedRoots string = ''

// --- Partner Center credentials: supplied at deploy time or set in Key Vault afterwards --------
// Empty values leave existing Key Vault secrets untouched (modules/keyvault.bicep), so a secret
// exists only once a value was given here or set by hand (the postprovision hook offers to):
// nothing in the Bicep refers to a secret resource, the app's roles are on the vault
// (modules/role-assignments.bicep), and the app settings name the secrets in Key Vault
// references, which the platform resolves at run time.

@description('Partner Center (partner) Entra tenant id; stored in Key Vault.')
param partnerCenterTenantId string = ''

@description('Client id of the Partner Center app registration; stored in Key Vault.')
param partnerCenterClientId string = ''

@secure()
@description('Client secret of the Partner Center app registration; stored in Key Vault.')
param partnerCenterClientSecret string = ''

@secure()
@description('App+user refresh token of a Referrals admin; stored in Key Vault.')
param partnerCenterRefreshToken string = ''

// --- Platform -------------------------------------------------------------------------------

@description('Maximum instances of the Flex Consumption app.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Key Vault purge protection (irreversible); true for production.')
param enablePurgeProtection bool = true

@minValue(30)
param logRetentionInDays int = 30

@description('Put an ABAC condition on the app\'s Key Vault Secrets Officer role so that it writes only the refresh token\'s secret (Key Vault ABAC is in preview; without it the role covers the vault, which holds only this app\'s four secrets).')
param vaultAbacWriteCondition bool = false

@description('Object id of the operator user/group (azd fills in the signed-in user); empty = no operator roles.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// --- Alerts and the workbook (modules/alerts.bicep, docs/operate.md) ------------------------

@description('Create the availability test on /api/health (and its alert). Turn on once the code is deployed: the test gets a key of its own on the health function.')
param enableAvailabilityTest bool = false

@description('Resource id of an existing action group every alert notifies; empty = see alertEmailAddress.')
param actionGroupId string = ''

@description('With no actionGroupId: e-mail address of an action group created for the alerts; empty = alerts without notifications.')
param alertEmailAddress string = ''

@minValue(1)
@description('Availability alert: test locations failing at once (of five).')
param availabilityFailedLocations int = 2

@minValue(1)
@description('Jobs moved to sync-jobs-poison within 15 minutes that raise an alert.')
param poisonedJobsThreshold int = 1

@minValue(1)
@description('Failed function invocations (exceptions, HTTP 5xx) within 15 minutes.')
param failedInvocationsThreshold int = 5

@minValue(1)
@description('Partner Center webhook calls answered 401 within 15 minutes.')
param webhook401Threshold int = 3

@minValue(1)
@description('Token failures within 15 minutes.')
param tokenFailuresThreshold int = 1

@minValue(5)
@description('Minutes without a saved poll_dataverse cursor (keep above 3 poll periods).')
param pollCursorMaxAgeMinutes int = 20

@minValue(15)
@description('Minutes without a saved reconcile_partner_center cursor (keep above 3 reconcile periods).')
param reconcileCursorMaxAgeMinutes int = 60

var tags = {
  'azd-env-name': environmentName
  application: 'co-sell-sync'
}

// Globally unique, stable per subscription + environment + region, and short enough for the
// 24-character storage and Key Vault name limits.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))

var names = {
  resourceGroup: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  identity: 'id-cosell-${resourceToken}'
  logAnalytics: 'log-cosell-${resourceToken}'
  applicationInsights: 'appi-cosell-${resourceToken}'
  storage: 'stcosell${resourceToken}'
  keyVault: 'kv-cosell-${take(resourceToken, 11)}'
  plan: 'plan-cosell-${resourceToken}'
  // 25 characters: the host id is derived from the app name (UNCERTAIN truncation rule, reported
  // as 32 characters), so keep the distinguishing part short.
  functionApp: 'func-cosell-${resourceToken}'
  deploymentContainer: 'app-package-${resourceToken}'
}

var secretNames = {
  tenantId: 'partner-center-tenant-id'
  clientId: 'partner-center-client-id'
  clientSecret: 'partner-center-client-secret'
  refreshToken: 'partner-center-refresh-token'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    deploymentContainerName: names.deploymentContainer
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: tags
    secretNames: secretNames
    enablePurgeProtection: enablePurgeProtection
    partnerCenterTenantId: partnerCenterTenantId
    partnerCenterClientId: partnerCenterClientId
    partnerCenterClientSecret: partnerCenterClientSecret
    partnerCenterRefreshToken: partnerCenterRefreshToken
  }
}

module appRoles 'modules/role-assignments.bicep' = {
  name: 'app-roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    refreshTokenSecretName: secretNames.refreshToken
    restrictSecretWrites: vaultAbacWriteCondition
  }
}

module operatorRoles 'modules/operator-roles.bicep' = if (!empty(operatorPrincipalId)) {
  name: 'operator-roles'
  scope: rg
  params: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
  }
}

// Every app setting, by the names SPEC 6 fixes. `AzureWebJobsStorage` itself (a connection
// string) is deliberately absent: shared keys are disabled, the host and the app use the
// identity-based group below instead (reference §1.5).
var appSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // Selects the user-assigned identity for azure-identity's DefaultAzureCredential (Dataverse
  // token). Without AZURE_CLIENT_SECRET/AZURE_TENANT_ID it does not switch on EnvironmentCredential.
  AZURE_CLIENT_ID: identity.outputs.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  PARTNER_CENTER_API_URL: partnerCenterApiUrl
  PARTNER_CENTER_WEBHOOK_API_URL: partnerCenterWebhookApiUrl
  // Resolved by the platform with keyVaultReferenceIdentity. UNCERTAIN: no Flex-specific caveat
  // for Key Vault references is known (reference §6.1).
  PARTNER_CENTER_TENANT_ID: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${secretNames.tenantId})'
  PARTNER_CENTER_CLIENT_ID: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${secretNames.clientId})'
  PARTNER_CENTER_CLIENT_SECRET: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${secretNames.clientSecret})'
  PARTNER_CENTER_REFRESH_TOKEN: '@Microsoft.KeyVault(VaultName=${keyVault.outputs.name};SecretName=${secretNames.refreshToken})'
  // Where the app saves each rotated refresh token (a new version of the same secret).
  PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI: '${keyVault.outputs.uri}secrets/${secretNames.refreshToken}'
  DATAVERSE_URL: dataverseUrl
  DATAVERSE_POLL_SCHEDULE: dataversePollSchedule
  PARTNER_CENTER_RECONCILE_SCHEDULE: partnerCenterReconcileSchedule
  CONFLICT_POLICY: conflictPolicy
  // App settings are strings; the app parses 'true'/'false'.
  SHOW_SYNC_MARK_IN_NAME: showSyncMarkInName ? 'true' : 'false'
  SYNC_COSELL_ONLY: syncCosellOnly ? 'true' : 'false'
  CRM_DEAL_VALUE_FIELD: crmDealValueField
  CRM_COUNTRY_FIELD: crmCountryField
  CRM_MAPPING: crmMapping
  CRM_MAPPING_FILE: crmMappingFile
  CRM_COLUMN_PREFIX: crmColumnPrefix
  REFERRAL_LINK_TEMPLATE: referralLinkTemplate
  // Never `off` in Azure: unsigned webhook calls are rejected (SPEC 8).
  WEBHOOK_SIGNATURE_MODE: 'verify'
  WEBHOOK_CERT_HOST_ALLOWLIST: webhookCertHostAllowlist
  WEBHOOK_TRUSTED_ROOTS: webhookTrustedRoots
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    planName: names.plan
    functionAppName: names.functionApp
    location: location
    tags: tags
    identityId: identity.outputs.id
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    appSettings: appSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  // The host reads storage and Key Vault as the identity on its first start; grant first.
  // (Role propagation can still take minutes: expect 403s right after a first deploy.)
  dependsOn: [
    appRoles
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'cosell-${resourceToken}'
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    functionAppName: functionApp.outputs.name
    functionAppHostName: functionApp.outputs.defaultHostName
    enableAvailabilityTest: enableAvailabilityTest
    actionGroupId: actionGroupId
    alertEmailAddress: alertEmailAddress
    availabilityFailedLocations: availabilityFailedLocations
    poisonedJobsThreshold: poisonedJobsThreshold
    failedInvocationsThreshold: failedInvocationsThreshold
    webhook401Threshold: webhook401Threshold
    tokenFailuresThreshold: tokenFailuresThreshold
    pollCursorMaxAgeMinutes: pollCursorMaxAgeMinutes
    reconcileCursorMaxAgeMinutes: reconcileCursorMaxAgeMinutes
  }
}

// azd stores these in .azure/<env>/.env; docs/deploy.md and docs/operate.md use them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_URL string = 'https://${functionApp.outputs.defaultHostName}'
// Register this with `cosell webhook register`, plus the function key (?code=...), which is a
// secret and therefore not an output.
output WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/webhooks/partner-center'
output HEALTH_URL string = 'https://${functionApp.outputs.defaultHostName}/api/health'
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint
output AZURE_STORAGE_TABLE_ENDPOINT string = storage.outputs.tableEndpoint
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output WORKBOOK_NAME string = alerts.outputs.workbookName
output AVAILABILITY_TEST_NAME string = alerts.outputs.availabilityTestName
output ALERT_RULE_NAMES array = alerts.outputs.alertNames
