// What the flows identity (id-readmission-flows, in the shared resource group: see
// flow-run-identities.bicep) may do in one environment: the least a flow run needs to drive
// Azure ML there through azure-ai-ml. Deployed by main.bicep at the environment's resource
// group. Names are guid(scope, principal, role). Role IDs: Azure built-in roles,
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
//
// - AzureML Data Scientist on the workspace: "can perform all actions within an Azure Machine
//   Learning workspace, except for creating or deleting compute resources and modifying the
//   workspace itself" (https://learn.microsoft.com/azure/machine-learning/how-to-assign-roles):
//   data assets, pipeline jobs, models, online and batch endpoints and deployments, traffic.
//   It is also the role Azure ML names for control-plane and data-plane calls to online
//   endpoints (https://learn.microsoft.com/azure/machine-learning/how-to-authenticate-online-endpoint).
//   Not Contributor: no compute, no workspace changes, no role assignments.
// - Storage Blob Data Contributor on the workspace's storage account: the storage refuses
//   shared keys and its datastores use identities, so the SDK uploads code, components and data
//   assets to workspaceblobstore as the caller. Its containers are named after the workspace
//   ID, known only once the workspace exists: granted on the account.
// - Monitoring Reader on the workspace: Azure Monitor metrics of the online endpoints (child
//   resources of the workspace), read during a rollout's bakes. "Can read all monitoring data".
// - Managed Identity Operator on the environment's endpoint identity (test and prod): every
//   release creates its own test endpoint, and rollbacks may recreate endpoints, under that
//   user-assigned identity; Resource Manager checks
//   Microsoft.ManagedIdentity/userAssignedIdentities/assign/action on an identity before a
//   resource gets it. Read and assign only: it cannot change or delete the identity.
// The shared registry's grant (AzureML Registry User) is made once, in flow-run-access.bicep.

@description('Name of the environment\'s Azure ML workspace.')
param workspaceName string

@description('Name of the workspace\'s default storage account.')
param storageAccountName string

@description('Principal of the flows identity.')
param flowsPrincipalId string

@description('Name of the environment\'s endpoint identity; empty when the environment has none.')
param endpointIdentityName string = ''

var azureMLDataScientist = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f6c7c914-8db3-469d-8ca1-694a8f32e121')
var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
var monitoringReader = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '43d0d8ad-25c7-4714-9337-8ba259a9fe05')
var managedIdentityOperator = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'f1a07417-d97a-45cb-824c-7a7467783830')

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-12-01' existing = {
  name: workspaceName
}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource endpointIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: endpointIdentityName
}

resource flowsDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, flowsPrincipalId, azureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: azureMLDataScientist
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsBlobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, flowsPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsMonitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, flowsPrincipalId, monitoringReader)
  scope: workspace
  properties: {
    roleDefinitionId: monitoringReader
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource flowsAssignsEndpointIdentity 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(endpointIdentityName)) {
  name: guid(endpointIdentity.id, flowsPrincipalId, managedIdentityOperator)
  scope: endpointIdentity
  properties: {
    roleDefinitionId: managedIdentityOperator
    principalId: flowsPrincipalId
    principalType: 'ServicePrincipal'
  }
}
