// What the identities that run jobs and serve requests may do with the workspace's own
// resources. Names are guid(scope, principal, role): the same on every deployment.

@description('Name of the workspace default storage account.')
param storageAccountName string

@description('Name of the workspace Key Vault.')
param keyVaultName string

@description('Name of the workspace container registry.')
param containerRegistryName string

@description('Principal of the compute cluster system-assigned identity.')
param computePrincipalId string

@description('Principal of the online endpoint user-assigned identity; empty when the environment has none.')
param endpointPrincipalId string = ''

var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
var acrPull = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')
var keyVaultSecretsUser = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource keyVault 'Microsoft.KeyVault/vaults@2024-11-01' existing = {
  name: keyVaultName
}

resource containerRegistry 'Microsoft.ContainerRegistry/registries@2025-04-01' existing = {
  name: containerRegistryName
}

// Training jobs read inputs and write outputs through identity-based datastores.
resource computeBlobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, computePrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Nodes pull the environment images the workspace built.
resource computeAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(containerRegistry.id, computePrincipalId, acrPull)
  scope: containerRegistry
  properties: {
    roleDefinitionId: acrPull
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Jobs resolve workspace connections whose secrets live in the Key Vault.
resource computeKeyVaultSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, computePrincipalId, keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: keyVaultSecretsUser
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The online endpoints pull the inference environment's image the workspace built (Azure ML
// grants this to a system-assigned endpoint identity itself, never to a user-assigned one) ...
resource endpointAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(endpointPrincipalId)) {
  name: guid(containerRegistry.id, endpointPrincipalId, acrPull)
  scope: containerRegistry
  properties: {
    roleDefinitionId: acrPull
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ... read the workspace's models and code (Storage Blob Data Reader would do), and their data
// collector writes model_inputs/model_outputs to this storage account's default container
// (Storage Blob Data Contributor on the destination, which includes the reads). The container
// is named after the workspace ID, known only once the workspace exists: granted on the
// account.
resource endpointBlobData 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(endpointPrincipalId)) {
  name: guid(storage.id, endpointPrincipalId, storageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: storageBlobDataContributor
    principalId: endpointPrincipalId
    principalType: 'ServicePrincipal'
  }
}
