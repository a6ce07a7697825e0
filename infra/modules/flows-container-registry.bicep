// The container registry of the flows' image (the repo's Dockerfile, pushed by CI): every flow
// run's container group pulls it under the flows identity (prefect-azure's ACRManagedIdentity),
// so there is no admin user, no anonymous pull, Entra ID tokens only, like the workspaces'
// registries (container-registry.bicep). The shared resource group has no Log Analytics
// workspace, so pushes and pulls show in the registry's activity log only.

@description('Azure region of the resources.')
param location string

@description('Container registry name (5-50 letters and digits, globally unique), e.g. crreadmissionflows.')
@minLength(5)
@maxLength(50)
param registryName string

@description('Tags applied to every resource.')
param tags object = {}

resource containerRegistry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: registryName
  location: location
  tags: tags
  sku: {
    name: 'Premium'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    networkRuleBypassOptions: 'AzureServices'
    zoneRedundancy: 'Enabled'
    policies: {
      retentionPolicy: {
        status: 'enabled'
        days: 30
      }
    }
  }
}

output containerRegistryId string = containerRegistry.id
output containerRegistryName string = containerRegistry.name
