// The shared part of the platform: one Azure ML registry, in its own resource group, that
// every environment reads from and that releases promote models into. Deploy with
// parameters/shared.bicepparam before any environment (main.bicep grants each environment's
// identities access to this registry).

targetScope = 'subscription'

@description('Azure region of the registry.')
param location string

@description('Resource group of the shared registry, e.g. rg-readmission-shared.')
param resourceGroupName string

@description('Shared Azure ML registry name, e.g. mlr-readmission-shared.')
param registryName string

@description('Short project name used in tags.')
param projectName string = 'readmission'

@description('Tags applied to every resource.')
param tags object = {}

var allTags = union(tags, {
  project: projectName
  environment: 'shared'
})

resource sharedGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: allTags
}

module registry 'modules/registry.bicep' = {
  name: '${projectName}-shared-registry'
  scope: sharedGroup
  params: {
    location: location
    registryName: registryName
    tags: allTags
  }
}

output resourceGroupName string = sharedGroup.name
output registryName string = registry.outputs.registryName
output registryId string = registry.outputs.registryId
output registryPrincipalId string = registry.outputs.registryPrincipalId
