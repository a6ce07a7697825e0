// The shared resource group: the registry (environments.yaml `shared_registry`) and what the
// flows run on in Azure (environments.yaml `orchestration`). tests/infra/test_bicep.py checks
// that the names here are the ones environments.yaml gives.
using '../shared.bicep'

param location = 'eastus2'
param resourceGroupName = 'rg-readmission-shared'
param registryName = 'mlr-readmission-shared'
param containerRegistryName = 'crreadmissionflows'
param flowsStorageAccountName = 'streadmissionflows'
param resultsContainerName = 'prefect-results'
param auditContainerName = 'audit-trail'
// About seven years (7 x 365 days) of write-once records.
param auditRetentionDays = 2555
param flowsIdentityName = 'id-readmission-flows'
param workerIdentityName = 'id-readmission-worker'
param tags = {
  owner: 'mlops'
}
