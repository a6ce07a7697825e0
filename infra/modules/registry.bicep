// The shared Azure ML registry: the one place promoted models live, read by every
// environment. Azure creates its storage account and container registry in a managed
// resource group; here we choose their SKUs and keep blobs private.

@description('Azure region of the registry (its primary region).')
param location string

@description('Registry name, e.g. mlr-readmission-shared (from environments.yaml).')
@minLength(3)
@maxLength(33)
param registryName string

@description('Tags applied to every resource.')
param tags object = {}

resource registry 'Microsoft.MachineLearningServices/registries@2025-12-01' = {
  name: registryName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    publicNetworkAccess: 'Enabled'
    regionDetails: [
      {
        location: location
        acrDetails: [
          {
            systemCreatedAcrAccount: {
              acrAccountSku: 'Premium'
            }
          }
        ]
        storageAccountDetails: [
          {
            systemCreatedStorageAccount: {
              storageAccountType: 'Standard_LRS'
              storageAccountHnsEnabled: false
              allowBlobPublicAccess: false
            }
          }
        ]
      }
    ]
  }
}

output registryId string = registry.id
output registryName string = registry.name
output registryPrincipalId string = registry.identity.principalId
output discoveryUrl string = registry.properties.discoveryUrl
