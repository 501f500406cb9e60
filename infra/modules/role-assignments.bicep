// The data-plane roles of the app's managed identity, and nothing more (reference:
// azure-functions-platform §1.5, §6.1). tests/infra/test_infra_roles.py pins this exact set.

@description('Principal (object) id of the user-assigned managed identity.')
param principalId string

param storageAccountName string
param applicationInsightsName string
param keyVaultName string

@description('Name of the Key Vault secret holding the Partner Center refresh token (the one secret the app writes).')
param refreshTokenSecretName string

@description('Limit the app\'s Key Vault Secrets Officer role with an ABAC condition to writing that one secret (Key Vault ABAC is in preview).')
param restrictSecretWrites bool = false

// Built-in role definition ids (the same in every tenant).
var roleIds = {
  // Host storage: timer singleton locks, function keys and the Flex deployment package.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Queue trigger and our enqueueing; the host also creates and writes sync-jobs-poison.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // State tables (synclinks, synccursors, synchistory) and the host's diagnostic events.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Telemetry ingestion with Entra auth (local auth is disabled on the component).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Key Vault references in app settings (read-only: get secret).
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // Saving the rotated Partner Center refresh token (SPEC 6): see refreshTokenWriter below.
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// With restrictSecretWrites: the ABAC condition on the app's Key Vault Secrets Officer role. The
// secret data actions that role adds to Key Vault Secrets User are each allowed on the refresh
// token's secret only, tested by the request's secret name for set and restore (the secret may
// not exist yet) and by the secret's own name for the others; reads stay as Key Vault Secrets
// User allows them. https://learn.microsoft.com/azure/key-vault/general/rbac-abac (actions and
// attributes), https://learn.microsoft.com/azure/role-based-access-control/conditions-format
var refreshTokenOnlyConditionTemplate = '''
(
 (
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/setSecret/action'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/restore/action'})
 )
 OR
 (
  @Request[Microsoft.KeyVault/vaults/secrets:name] StringEquals '__SECRET_NAME__'
 )
)
AND
(
 (
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/update/action'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/rotate/action'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/delete'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/backup/action'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/recover/action'})
  AND
  !(ActionMatches{'Microsoft.KeyVault/vaults/secrets/purge/action'})
 )
 OR
 (
  @Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals '__SECRET_NAME__'
 )
)
'''
var refreshTokenOnlyCondition = replace(refreshTokenOnlyConditionTemplate, '__SECRET_NAME__', refreshTokenSecretName)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
  }
}

resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
  }
}

resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, roleIds.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
  }
}

// Writing the rotated refresh token (shared/secrets.py: set_secret, a new version of that secret)
// needs Key Vault Secrets Officer. It is assigned on the vault, not on the secret: the secrets
// are created only when a value is passed at deploy time (keyvault.bicep; creating one with a
// placeholder would overwrite the real value on every redeploy, and "create only if absent" is
// not expressible in ARM), so on a first `azd up` with the secrets set afterwards the secret
// scope does not exist and the assignment would fail. The vault holds nothing but this app's
// four Partner Center settings, which the identity already reads; Microsoft recommends a vault
// per application and environment with roles at the vault scope
// (https://learn.microsoft.com/azure/key-vault/general/rbac-guide, best practices). With
// restrictSecretWrites the same assignment carries an ABAC condition that limits every write to
// the refresh token's secret (Key Vault ABAC is in preview; off by default, so a tenant without
// it still deploys). tests/infra/test_infra_deploy_order.py checks no unconditional reference
// to a conditional resource comes back.
resource refreshTokenWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roleIds.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsOfficer)
    description: 'Co-sell Sync: save the rotated Partner Center refresh token (${refreshTokenSecretName})'
    condition: restrictSecretWrites ? refreshTokenOnlyCondition : null
    conditionVersion: restrictSecretWrites ? '2.0' : null
  }
}
