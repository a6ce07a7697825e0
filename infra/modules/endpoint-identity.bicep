// The user-assigned identity of the prod online endpoint. It outlives endpoint re-creation
// (blue/green swaps, rollbacks), so its role assignments are made once, here in Bicep.

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
