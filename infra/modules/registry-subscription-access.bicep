// Read access for an online endpoint identity to the shared registry's storage account and
// container registry. Azure creates those two in a resource group it manages for the registry
// (not named in our templates), and the reference system found that they refuse resource-scoped
// grants, so it grants at the registry's subscription; so do we. Deployed
// by main.bicep at scope: subscription(registrySubscriptionId), for environments with an
// endpoint identity. Keep the shared registry in a subscription of its own to keep these
// grants narrow: at subscription scope they cover every storage account and container
// registry in it.
targetScope = 'subscription'

@description('Principal of the online endpoint user-assigned identity.')
param endpointPrincipalId string

var acrPull = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
var storageBlobDataReader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1')

// Pull the images of environments kept in the registry.
resource endpointRegistryAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, endpointPrincipalId, acrPull)
  properties: {
    roleDefinitionId: acrPull
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Read the files of models promoted to the registry.
resource endpointRegistryBlobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, endpointPrincipalId, storageBlobDataReader)
  properties: {
    roleDefinitionId: storageBlobDataReader
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
  }
}
