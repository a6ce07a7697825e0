// The Azure ML workspace of one environment, with a system-assigned identity. Its default
// datastores authenticate with identities (the storage account refuses shared keys). The
// resource provider grants this identity its roles on the storage account, Key Vault and
// container registry when it creates the workspace, so they are not declared here
// (declaring them again fails with RoleAssignmentExists).

@description('Azure region of the resources.')
param location string

@description('Workspace name, e.g. mlw-readmission-dev (from environments.yaml).')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Environment the workspace serves: dev, test or prod.')
param environmentName string

@description('Resource ID of the default storage account.')
param storageAccountId string

@description('Resource ID of the Key Vault.')
param keyVaultId string

@description('Resource ID of the container registry.')
param containerRegistryId string

@description('Resource ID of the Application Insights component.')
param appInsightsId string

@description('Log Analytics workspace that receives the diagnostic logs.')
param logAnalyticsId string

@description('Tags applied to every resource.')
param tags object = {}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-12-01' = {
  name: workspaceName
  location: location
  tags: tags
  kind: 'Default'
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: workspaceName
    description: 'Readmission model, ${environmentName} environment'
    storageAccount: storageAccountId
    keyVault: keyVaultId
    containerRegistry: containerRegistryId
    applicationInsights: appInsightsId
    systemDatastoresAuthMode: 'Identity'
    hbiWorkspace: false
    v1LegacyMode: false
    publicNetworkAccess: 'Enabled'
  }
}

resource workspaceDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: workspace
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output workspacePrincipalId string = workspace.identity.principalId
