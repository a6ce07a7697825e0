// The training cluster: scales to zero when idle, runs jobs under its own system-assigned
// identity (identity-based datastore access), no SSH, no local auth.

@description('Azure region of the resources.')
param location string

@description('Name of the workspace the cluster belongs to.')
param workspaceName string

@description('Compute name, e.g. cpu-cluster (from environments.yaml).')
@minLength(2)
@maxLength(16)
param computeName string

@description('VM size of the nodes.')
param vmSize string = 'Standard_DS3_v2'

@description('Upper bound of nodes; the lower bound is always 0.')
@minValue(1)
@maxValue(16)
param maxNodeCount int = 2

@description('Tags applied to every resource.')
param tags object = {}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-12-01' existing = {
  name: workspaceName
}

resource computeCluster 'Microsoft.MachineLearningServices/workspaces/computes@2025-12-01' = {
  parent: workspace
  name: computeName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'Training cluster; scales to zero when idle'
    disableLocalAuth: true
    properties: {
      osType: 'Linux'
      vmSize: vmSize
      vmPriority: 'Dedicated'
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        minNodeCount: 0
        maxNodeCount: maxNodeCount
        nodeIdleTimeBeforeScaleDown: 'PT5M'
      }
    }
  }
}

output computeId string = computeCluster.id
output computePrincipalId string = computeCluster.identity.principalId
