// What the flows identity and the worker identity may do in the shared resource group (the
// resource group where the flow runs' container groups go). Names are guid(scope, principal,
// role): the same on every deployment. Role IDs: Azure built-in roles,
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
//
// Flows identity (the flow run's container):
// - AcrPull on the flows' registry: the container group pulls the flows' image under this
//   identity (prefect-azure's ACRManagedIdentity; ACI's "deploy from ACR with a managed
//   identity", https://learn.microsoft.com/azure/container-instances/using-azure-container-registry-mi).
// - Storage Blob Data Contributor on each of the two containers, not the account: results
//   (prefect-results) are written and read back on resume; audit records (audit-trail) are
//   appended. The immutability policy, not the role, is what keeps audit records unchangeable.
// - AzureML Registry User on the shared Azure ML registry: "can get registries, and read, write
//   and delete assets within them" (https://learn.microsoft.com/azure/machine-learning/how-to-assign-roles):
//   promotion shares the approved model into the registry, and test/prod pipelines read its
//   components and environments. Granted once here rather than per environment.
// It gets nothing else here: no role on the resource group, so it can neither create container
// groups nor assign roles.
//
// Worker identity (prefect-azure's ACI worker):
// - the custom role flowRunLauncher (shared.bicep) on this resource group only: the ARM
//   deployment that creates a container group, reading, stopping and deleting container groups
//   and reading their logs. Container groups do not exist before the run, so the grant is on the
//   resource group; the role has no other resource type in it.
// - Managed Identity Operator ("Read and Assign User Assigned Identity") on the flows identity
//   only: Resource Manager checks Microsoft.ManagedIdentity/userAssignedIdentities/assign/action
//   on an identity before it attaches it to a container group.

@description('Name of the flows\' container registry.')
param containerRegistryName string

@description('Name of the flows\' storage account.')
param storageAccountName string

@description('Blob container of Prefect results.')
param resultsContainerName string

@description('Blob container of the audit trail.')
param auditContainerName string

@description('Name of the shared Azure ML registry.')
param registryName string

@description('Name of the flows identity.')
param flowsIdentityName string

@description('Principal of the flows identity.')
param flowsPrincipalId string

@description('Principal of the worker identity.')
param workerPrincipalId string

@description('Name (a GUID) of the custom role that launches flow runs as container groups.')
param flowRunLauncherRoleName string

var acrPull = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
var azureMLRegistryUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '1823dd4f-9b8c-4ab6-ab4e-7397a3684615')
var managedIdentityOperator = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f1a07417-d97a-45cb-824c-7a7467783830')
var flowRunLauncher = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', flowRunLauncherRoleName)

resource containerRegistry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: containerRegistryName
}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' existing = {
  parent: storage
  name: 'default'
}

resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' existing = {
  parent: blobService
  name: resultsContainerName
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' existing = {
  parent: blobService
  name: auditContainerName
}

resource registry 'Microsoft.MachineLearningServices/registries@2025-12-01' existing = {
  name: registryName
}

resource flowsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: flowsIdentityName
}

resource flowsAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(containerRegistry.id, flowsPrincipalId, acrPull)
  scope: containerRegistry
  properties: {
    roleDefinitionId: acrPull
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsResultsBlobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resultsContainer.id, flowsPrincipalId, storageBlobDataContributor)
  scope: resultsContainer
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsAuditBlobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(auditContainer.id, flowsPrincipalId, storageBlobDataContributor)
  scope: auditContainer
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsRegistryUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, flowsPrincipalId, azureMLRegistryUser)
  scope: registry
  properties: {
    roleDefinitionId: azureMLRegistryUser
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerFlowRunLauncher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, workerPrincipalId, flowRunLauncher)
  properties: {
    roleDefinitionId: flowRunLauncher
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource workerAssignsFlowsIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(flowsIdentity.id, workerPrincipalId, managedIdentityOperator)
  scope: flowsIdentity
  properties: {
    roleDefinitionId: managedIdentityOperator
    principalId: workerPrincipalId
    principalType: 'ServicePrincipal'
  }
}
