// The one identity the app uses for everything Azure-side: storage (host and state), Application
// Insights ingestion, Key Vault references and the Dataverse application user. User-assigned,
// so it exists (and can be given roles and a Dataverse user) before the function app does.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
