// The user-assigned identity the environment's online endpoints run under (test and prod:
// environments.yaml names its resource ID as the environment's endpoint_identity). It
// outlives endpoint re-creation (the test endpoint of every release, blue/green swaps,
// rollbacks), so its role assignments are made once, in Bicep: AcrPull and Storage Blob Data
// Contributor on the workspace's registry and storage (workspace-role-assignments.bicep),
// AzureML Registry User on the shared registry (registry-access.bicep), AcrPull and Storage
// Blob Data Reader at the registry's subscription (registry-subscription-access.bicep).

@description('Azure region of the resources.')
param location string

@description('Identity name.')
param identityName string

@description('Tags applied to every resource.')
param tags object = {}

resource endpointIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

output identityId string = endpointIdentity.id
output principalId string = endpointIdentity.properties.principalId
output clientId string = endpointIdentity.properties.clientId
