// The dev environment. Names match environments.yaml (environments.dev).
using '../main.bicep'

param environmentName = 'dev'
param location = 'eastus2'
param resourceGroupName = 'rg-readmission-dev'
param workspaceName = 'mlw-readmission-dev'
param computeName = 'cpu-cluster'
param computeMaxNodeCount = 2
param registryName = 'mlr-readmission-shared'
param registryResourceGroup = 'rg-readmission-shared'
param orchestrationResourceGroup = 'rg-readmission-shared'
param flowsIdentityName = 'id-readmission-flows'
param deployEndpointIdentity = false
param tags = {
  owner: 'mlops'
}
