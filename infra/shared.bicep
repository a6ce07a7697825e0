// The shared part of the platform, in its own resource group: the Azure ML registry that every
// environment reads from and that releases promote models into, and what the flows run on in
// Azure (environments.yaml's `orchestration` section): the flows' container registry, the
// storage account of Prefect's results and of the audit trail, the flows identity and the ACI
// worker's identity, and what each of them may do. Flow runs' container groups are created in
// this resource group too. Deploy with parameters/shared.bicepparam before any environment
// (main.bicep grants each environment's identities, and the flows identity, access there).

targetScope = 'subscription'

@description('Azure region of the shared resources.')
param location string

@description('Resource group of the shared resources, e.g. rg-readmission-shared.')
param resourceGroupName string

@description('Shared Azure ML registry name, e.g. mlr-readmission-shared.')
param registryName string

@description('Container registry of the flows\' image, e.g. crreadmissionflows.')
@minLength(5)
@maxLength(50)
param containerRegistryName string

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

@description('Identity the flow runs run as, e.g. id-readmission-flows.')
param flowsIdentityName string

@description('Identity the ACI worker runs as, e.g. id-readmission-worker.')
param workerIdentityName string

@description('Short project name used in tags.')
param projectName string = 'readmission'

@description('Tags applied to every resource.')
param tags object = {}

var allTags = union(tags, {
  project: projectName
  environment: 'shared'
})

var flowRunLauncherRoleName = guid(subscription().id, resourceGroupName, 'flow-run-launcher')

resource sharedGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: allTags
}

// The least the ACI worker needs to run a flow run as a container group (prefect-azure 0.4.13,
// prefect_azure/workers/container_instance.py): an ARM deployment at resource-group scope
// (deployments/write, then read and its operation statuses while it polls), the container
// group's write that deployment makes, reading the group and its logs while the run lasts,
// stopping it when the run is cancelled, deleting it afterwards, and the container-instance
// async operations it polls. Actions: https://learn.microsoft.com/azure/role-based-access-control/permissions/containers
// and .../permissions/management-and-governance. The built-in "Azure Container Instances
// Contributor Role" (5d977122-f97e-4b4d-a52f-6b43003ddb4d) would be the alternative; its
// action list was not readable here, so the exact list is spelled out instead. Assignable in
// this resource group only.
resource flowRunLauncher 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: flowRunLauncherRoleName
  properties: {
    roleName: '${projectName} flow-run launcher (${resourceGroupName})'
    description: 'Creates, reads, stops and deletes the container groups of Prefect flow runs (prefect-azure ACI worker) through resource-group deployments.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Resources/subscriptions/resourceGroups/read'
          'Microsoft.Resources/deployments/read'
          'Microsoft.Resources/deployments/write'
          'Microsoft.Resources/deployments/operationstatuses/read'
          'Microsoft.ContainerInstance/containerGroups/read'
          'Microsoft.ContainerInstance/containerGroups/write'
          'Microsoft.ContainerInstance/containerGroups/delete'
          'Microsoft.ContainerInstance/containerGroups/stop/action'
          'Microsoft.ContainerInstance/containerGroups/containers/logs/read'
          'Microsoft.ContainerInstance/locations/operationResults/read'
          'Microsoft.ContainerInstance/locations/operations/read'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      sharedGroup.id
    ]
  }
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

module flowsContainerRegistry 'modules/flows-container-registry.bicep' = {
  name: '${projectName}-shared-flows-container-registry'
  scope: sharedGroup
  params: {
    location: location
    registryName: containerRegistryName
    tags: allTags
  }
}

module flowRunIdentities 'modules/flow-run-identities.bicep' = {
  name: '${projectName}-shared-flow-run-identities'
  scope: sharedGroup
  params: {
    location: location
    flowsIdentityName: flowsIdentityName
    workerIdentityName: workerIdentityName
    tags: allTags
  }
}

module flowRunAccess 'modules/flow-run-access.bicep' = {
  name: '${projectName}-shared-flow-run-access'
  scope: sharedGroup
  params: {
    containerRegistryName: flowsContainerRegistry.outputs.containerRegistryName
    storageAccountName: flowsStorage.outputs.storageAccountName
    resultsContainerName: resultsContainerName
    auditContainerName: auditContainerName
    registryName: registry.outputs.registryName
    flowsIdentityName: flowsIdentityName
    flowsPrincipalId: flowRunIdentities.outputs.flowsPrincipalId
    workerPrincipalId: flowRunIdentities.outputs.workerPrincipalId
    flowRunLauncherRoleName: flowRunLauncher.name
  }
}

output resourceGroupName string = sharedGroup.name
output registryName string = registry.outputs.registryName
output registryId string = registry.outputs.registryId
output registryPrincipalId string = registry.outputs.registryPrincipalId
output flowsStorageAccountName string = flowsStorage.outputs.storageAccountName
output flowsStorageAccountId string = flowsStorage.outputs.storageAccountId
output resultsContainerName string = resultsContainerName
output auditContainerName string = auditContainerName
output containerRegistryName string = flowsContainerRegistry.outputs.containerRegistryName
output flowsIdentityId string = flowRunIdentities.outputs.flowsIdentityId
output flowsIdentityClientId string = flowRunIdentities.outputs.flowsClientId
output flowsIdentityPrincipalId string = flowRunIdentities.outputs.flowsPrincipalId
output workerIdentityId string = flowRunIdentities.outputs.workerIdentityId
output workerIdentityClientId string = flowRunIdentities.outputs.workerClientId
output workerIdentityPrincipalId string = flowRunIdentities.outputs.workerPrincipalId
output flowRunLauncherRoleId string = flowRunLauncher.id
