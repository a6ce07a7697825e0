// The prod environment. Names match environments.yaml (environments.prod).
using '../main.bicep'

param environmentName = 'prod'
param location = 'eastus2'
param resourceGroupName = 'rg-readmission-prod'
param workspaceName = 'mlw-readmission-prod'
param computeName = 'cpu-cluster'
param computeMaxNodeCount = 4
param registryName = 'mlr-readmission-shared'
param registryResourceGroup = 'rg-readmission-shared'
param orchestrationResourceGroup = 'rg-readmission-shared'
param flowsIdentityName = 'id-readmission-flows'
param deployEndpointIdentity = true
param tags = {
  owner: 'mlops'
}
