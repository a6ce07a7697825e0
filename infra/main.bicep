// One environment (dev, test or prod) of the readmission model: its resource group, the Azure
// ML workspace with its storage, Key Vault, container registry and monitoring, a training
// cluster, the role assignments its identities need, access to the shared registry, and what
// the flows identity (shared.bicep) may do here (modules/flows-access.bicep).
// Deploy with a parameter file: parameters/<env>.bicepparam.
//
// Every name below is derived from parameters, uniqueString() of the resource group ID or
// guid() of (scope, principal, role), never from the clock or a random GUID: re-deploying
// the same parameters updates the same resources instead of creating new ones.

targetScope = 'subscription'

@description('Environment name; environments.yaml names dev, test and prod.')
@allowed([
  'dev'
  'test'
  'prod'
])
param environmentName string

@description('Azure region of the environment.')
param location string

@description('Resource group of the environment, e.g. rg-readmission-dev.')
param resourceGroupName string

@description('Azure ML workspace name, e.g. mlw-readmission-dev.')
param workspaceName string

@description('Training cluster name.')
param computeName string = 'cpu-cluster'

@description('VM size of the training cluster nodes.')
param computeVmSize string = 'Standard_DS3_v2'

@description('Upper bound of training cluster nodes (the lower bound is 0).')
param computeMaxNodeCount int = 2

@description('Short project name used in resource names.')
@minLength(3)
@maxLength(11)
param projectName string = 'readmission'

@description('Shared Azure ML registry name.')
param registryName string

@description('Resource group of the shared registry.')
param registryResourceGroup string

@description('Subscription of the shared registry.')
param registrySubscriptionId string = subscription().subscriptionId

@description('Resource group of the flows identity and the flow runs\' container groups (environments.yaml: orchestration.resource_group).')
param orchestrationResourceGroup string

@description('Subscription of the orchestration resource group.')
param orchestrationSubscriptionId string = subscription().subscriptionId

@description('Name of the flows identity, the user-assigned identity flow runs run as (shared.bicep creates it).')
param flowsIdentityName string

@description('Create the user-assigned identity the online endpoints run under, with its roles (test and prod: they serve models from the shared registry).')
param deployEndpointIdentity bool = false

@description('Days to keep logs in Log Analytics.')
param logRetentionInDays int = 30

@description('Tags applied to every resource.')
param tags object = {}

var allTags = union(tags, {
  project: projectName
  environment: environmentName
})

// 13 characters from the subscription and resource group: stable for this environment,
// different between environments, and what keeps globally unique names unique.
var suffix = uniqueString(subscription().subscriptionId, resourceGroupName)
var storageAccountName = take(toLower('st${projectName}${environmentName}${suffix}'), 24)
var keyVaultName = take('kv-${projectName}-${environmentName}-${suffix}', 24)
var containerRegistryName = take(toLower('cr${projectName}${environmentName}${suffix}'), 50)
var logAnalyticsName = 'log-${projectName}-${environmentName}'
var appInsightsName = 'appi-${projectName}-${environmentName}'
var endpointIdentityName = 'id-${projectName}-${environmentName}-endpoint'

resource environmentGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: '${projectName}-${environmentName}-monitoring'
  scope: environmentGroup
  params: {
    location: location
    logAnalyticsName: logAnalyticsName
    appInsightsName: appInsightsName
    retentionInDays: logRetentionInDays
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: '${projectName}-${environmentName}-storage'
  scope: environmentGroup
  params: {
    location: location
    storageAccountName: storageAccountName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    tags: allTags
  }
}

module keyVault 'modules/key-vault.bicep' = {
  name: '${projectName}-${environmentName}-key-vault'
  scope: environmentGroup
  params: {
    location: location
    keyVaultName: keyVaultName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    tags: allTags
  }
}

module containerRegistry 'modules/container-registry.bicep' = {
  name: '${projectName}-${environmentName}-container-registry'
  scope: environmentGroup
  params: {
    location: location
    registryName: containerRegistryName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    tags: allTags
  }
}

module workspace 'modules/workspace.bicep' = {
  name: '${projectName}-${environmentName}-workspace'
  scope: environmentGroup
  params: {
    location: location
    workspaceName: workspaceName
    environmentName: environmentName
    storageAccountId: storage.outputs.storageAccountId
    keyVaultId: keyVault.outputs.keyVaultId
    containerRegistryId: containerRegistry.outputs.containerRegistryId
    appInsightsId: monitoring.outputs.appInsightsId
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    tags: allTags
  }
}

module computeCluster 'modules/compute-cluster.bicep' = {
  name: '${projectName}-${environmentName}-compute'
  scope: environmentGroup
  params: {
    location: location
    workspaceName: workspaceName
    computeName: computeName
    vmSize: computeVmSize
    maxNodeCount: computeMaxNodeCount
    tags: allTags
  }
  dependsOn: [
    workspace
  ]
}

module endpointIdentity 'modules/endpoint-identity.bicep' = if (deployEndpointIdentity) {
  name: '${projectName}-${environmentName}-endpoint-identity'
  scope: environmentGroup
  params: {
    location: location
    identityName: endpointIdentityName
    tags: allTags
  }
}

module workspaceRoleAssignments 'modules/workspace-role-assignments.bicep' = {
  name: '${projectName}-${environmentName}-role-assignments'
  scope: environmentGroup
  params: {
    storageAccountName: storage.outputs.storageAccountName
    keyVaultName: keyVault.outputs.keyVaultName
    containerRegistryName: containerRegistry.outputs.containerRegistryName
    computePrincipalId: computeCluster.outputs.computePrincipalId
    endpointPrincipalId: deployEndpointIdentity ? endpointIdentity.outputs.principalId : ''
  }
}

// Cross-resource-group: the shared registry lives in its own resource group (shared.bicep).
// The endpoint identity gets AzureML Registry User there, to pull registry models.
module registryAccess 'modules/registry-access.bicep' = {
  name: '${projectName}-${environmentName}-registry-access'
  scope: resourceGroup(registrySubscriptionId, registryResourceGroup)
  params: {
    registryName: registryName
    workspacePrincipalId: workspace.outputs.workspacePrincipalId
    endpointPrincipalId: deployEndpointIdentity ? endpointIdentity.outputs.principalId : ''
  }
}

// The registry's own storage and container registry sit in a resource group Azure manages;
// the endpoint identity reads them through grants at the registry's subscription.
module registrySubscriptionAccess 'modules/registry-subscription-access.bicep' = if (deployEndpointIdentity) {
  name: '${projectName}-${environmentName}-registry-subscription-access'
  scope: subscription(registrySubscriptionId)
  params: {
    endpointPrincipalId: deployEndpointIdentity ? endpointIdentity.outputs.principalId : ''
  }
}

// The flows identity lives in the shared resource group (shared.bicep); what it may do in this
// environment is granted here, by the environment's own deployment.
resource flowsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: flowsIdentityName
  scope: resourceGroup(orchestrationSubscriptionId, orchestrationResourceGroup)
}

module flowsAccess 'modules/flows-access.bicep' = {
  name: '${projectName}-${environmentName}-flows-access'
  scope: environmentGroup
  params: {
    workspaceName: workspace.outputs.workspaceName
    storageAccountName: storage.outputs.storageAccountName
    flowsPrincipalId: flowsIdentity.properties.principalId
    endpointIdentityName: deployEndpointIdentity ? endpointIdentityName : ''
  }
  dependsOn: [
    endpointIdentity
  ]
}

output resourceGroupName string = environmentGroup.name
output workspaceName string = workspace.outputs.workspaceName
output workspaceId string = workspace.outputs.workspaceId
output computeName string = computeName
output storageAccountName string = storage.outputs.storageAccountName
output keyVaultName string = keyVault.outputs.keyVaultName
output containerRegistryName string = containerRegistry.outputs.containerRegistryName
output endpointIdentityId string = deployEndpointIdentity ? endpointIdentity.outputs.identityId : ''
output endpointIdentityClientId string = deployEndpointIdentity ? endpointIdentity.outputs.clientId : ''
