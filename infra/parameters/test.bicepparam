// The test environment. Names match environments.yaml (environments.test).
using '../main.bicep'

param environmentName = 'test'
param location = 'eastus2'
param resourceGroupName = 'rg-readmission-test'
param workspaceName = 'mlw-readmission-test'
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
