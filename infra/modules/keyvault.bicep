// Key Vault (RBAC mode, no access policies) for the Partner Center credentials. The app reads
// them through Key Vault references in its app settings; nothing secret is in the repo or in
// parameter files.
//
// A secret is written only when a value is passed at deploy time. An empty value leaves the
// secret as it is, so re-running `azd up` never overwrites a rotated refresh token or a secret
// an operator set by hand (docs/deploy.md, step 4). So a secret may not exist after a deployment:
// nothing may refer to these resources (no role assignment scoped to one, no output reading
// one); role-assignments.bicep grants on the vault. tests/infra/test_infra_deploy_order.py checks.

param name string
param location string
param tags object = {}

@description('Names of the secrets, by role: tenantId, clientId, clientSecret, refreshToken.')
param secretNames object

@description('Purge protection cannot be turned off again; enable it for production.')
param enablePurgeProtection bool = true

param partnerCenterTenantId string = ''
param partnerCenterClientId string = ''

@secure()
param partnerCenterClientSecret string = ''

@secure()
param partnerCenterRefreshToken string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // ARM rejects an explicit false once set, and false is the default, so send null instead.
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
  }
}

resource tenantIdSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterTenantId)) {
  parent: vault
  name: secretNames.tenantId
  properties: {
    value: partnerCenterTenantId
    contentType: 'Partner Center tenant id (GUID)'
  }
}

resource clientIdSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterClientId)) {
  parent: vault
  name: secretNames.clientId
  properties: {
    value: partnerCenterClientId
    contentType: 'Partner Center app registration client id (GUID)'
  }
}

resource clientSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterClientSecret)) {
  parent: vault
  name: secretNames.clientSecret
  properties: {
    value: partnerCenterClientSecret
    contentType: 'Partner Center app registration client secret'
  }
}

resource refreshTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterRefreshToken)) {
  parent: vault
  name: secretNames.refreshToken
  properties: {
    value: partnerCenterRefreshToken
    contentType: 'Partner Center app+user refresh token (Referrals admin)'
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
