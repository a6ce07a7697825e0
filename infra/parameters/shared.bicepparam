// The shared registry. Names match environments.yaml (shared_registry).
using '../shared.bicep'

param location = 'eastus2'
param resourceGroupName = 'rg-readmission-shared'
param registryName = 'mlr-readmission-shared'
param tags = {
  owner: 'mlops'
}
