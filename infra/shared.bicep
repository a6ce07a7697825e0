// The shared part of the platform, in its own resource group: the Azure ML registry that every
// environment reads from and that releases promote models into, and what the flows run on in
// Azure (environments.yaml's `orchestration` section): the storage account of Prefect's results
// and of the audit trail. Deploy with parameters/shared.bicepparam before any environment
// (main.bicep grants each environment's identities access to what is here).

targetScope = 'subscription'

@description('Azure region of the registry.')
param location string

@description('Resource group of the shared registry, e.g. rg-readmission-shared.')
param resourceGroupName string

@description('Shared Azure ML registry name, e.g. mlr-readmission-shared.')
param registryName string

@description('Storage account of the flows: Prefect results and the audit trail, e.g. streadmissionflows.')
@minLength(3)
@maxLength(24)
param flowsStorageAccountName string

@description('Blob container of Prefect flow-run results, e.g. prefect-results.')
param resultsContainerName string

@description('Blob container of the audit trail (WORM), e.g. audit-trail.')
param auditContainerName string

@description('Days each audit record stays unchangeable and undeletable.')
param auditRetentionDays int

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

module flowsStorage 'modules/flows-storage.bicep' = {
  name: '${projectName}-shared-flows-storage'
  scope: sharedGroup
  params: {
    location: location
    storageAccountName: flowsStorageAccountName
    resultsContainerName: resultsContainerName
    auditContainerName: auditContainerName
    auditRetentionDays: auditRetentionDays
    tags: allTags
  }
}

output resourceGroupName string = sharedGroup.name
output registryName string = registry.outputs.registryName
output registryId string = registry.outputs.registryId
output registryPrincipalId string = registry.outputs.registryPrincipalId
output flowsStorageAccountName string = flowsStorage.outputs.storageAccountName
output flowsStorageAccountId string = flowsStorage.outputs.storageAccountId
