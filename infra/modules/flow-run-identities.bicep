// The two user-assigned identities of flow runs on Azure, kept apart so that what runs the
// lifecycle can never make infrastructure:
// - the flows identity (id-readmission-flows) is what a flow run's container is: it pulls the
//   flows' image, writes Prefect results and the audit trail, and drives Azure ML (jobs,
//   models, endpoints) in each environment. It holds no role that can create container groups
//   or write role assignments (tests/infra/test_bicep.py checks it).
// - the worker identity (id-readmission-worker) is what prefect-azure's ACI worker runs as: it
//   creates a container group per flow run in the shared resource group (an ARM deployment),
//   reads it, stops it when the run is cancelled, and deletes it, and it may assign the flows
//   identity to those groups. It holds no data role and no Azure ML role.
// Their grants are in flow-run-access.bicep (shared resource group) and flows-access.bicep
// (each environment, from main.bicep).

@description('Azure region of the resources.')
param location string

@description('Identity of the flow runs, e.g. id-readmission-flows (environments.yaml: orchestration.flows_identity).')
param flowsIdentityName string

@description('Identity of the ACI worker, e.g. id-readmission-worker.')
param workerIdentityName string

@description('Tags applied to every resource.')
param tags object = {}

resource flowsIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: flowsIdentityName
  location: location
  tags: tags
}

resource workerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: workerIdentityName
  location: location
  tags: tags
}

output flowsIdentityId string = flowsIdentity.id
output flowsClientId string = flowsIdentity.properties.clientId
output flowsPrincipalId string = flowsIdentity.properties.principalId
output workerIdentityId string = workerIdentity.id
output workerClientId string = workerIdentity.properties.clientId
output workerPrincipalId string = workerIdentity.properties.principalId
