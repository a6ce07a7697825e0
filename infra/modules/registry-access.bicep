// Role assignments on the shared registry. Deployed by main.bicep at the registry's own
// resource group (scope: resourceGroup(registrySubscriptionId, registryResourceGroup)), so an
// environment can be granted access without owning the shared resource group's template.

@description('Name of the shared Azure ML registry.')
param registryName string

@description('Principal of the workspace system-assigned identity.')
param workspacePrincipalId string

@description('Principal of the online endpoint user-assigned identity; empty when the environment has none.')
param endpointPrincipalId string = ''

var azureMLRegistryUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '1823dd4f-9b8c-4ab6-ab4e-7397a3684615')

resource registry 'Microsoft.MachineLearningServices/registries@2025-12-01' existing = {
  name: registryName
}

// The workspace reads registry assets (components, environments, promoted models) and
// shares its models into the registry on promotion.
resource workspaceRegistryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, workspacePrincipalId, azureMLRegistryUser)
  scope: registry
  properties: {
    roleDefinitionId: azureMLRegistryUser
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The test and prod endpoints serve models straight from the registry.
resource endpointRegistryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(endpointPrincipalId)) {
  name: guid(registry.id, endpointPrincipalId, azureMLRegistryUser)
  scope: registry
  properties: {
    roleDefinitionId: azureMLRegistryUser
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
  }
}
