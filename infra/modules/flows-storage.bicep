// The flows' storage account, in the shared resource group: Prefect's result storage (a
// suspended run resumes in a new container group and reads its earlier results here) and the
// audit trail (append blobs in a container under a time-based immutability policy: WORM).
// Entra ID only (no shared keys, so no SAS), TLS 1.2, HTTPS, no anonymous blob access, like
// the workspaces' storage (storage.bicep). The flows identity's grants on the two containers
// are in orchestration-access.bicep.
//
// The immutability policy is deployed unlocked: Resource Manager cannot lock it (locking is a
// POST .../immutabilityPolicies/default/lock with the policy's ETag), and an unlocked policy
// can still be shortened or deleted by someone with Storage Account Contributor. Lock it once,
// by hand, after the first deployment (`az storage container immutability-policy lock`); a
// locked policy's period can then only be extended.

@description('Azure region of the resources.')
param location string

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Blob container of Prefect flow-run results.')
@minLength(3)
@maxLength(63)
param resultsContainerName string

@description('Blob container of the audit trail (append blobs, write once read many).')
@minLength(3)
@maxLength(63)
param auditContainerName string

@description('Days every audit record is kept unchangeable and undeletable after it is written.')
@minValue(1)
@maxValue(146000)
param auditRetentionDays int

@description('Tags applied to every resource.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: resultsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: auditContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Time-based retention on the audit container: blobs can be neither changed nor deleted for
// auditRetentionDays after they are created. allowProtectedAppendWrites lets new blocks be
// appended to an append blob (the audit log grows record by record) while every block already
// written stays unchangeable.
resource auditImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2025-01-01' = {
  parent: auditContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: true
  }
}

output storageAccountId string = storage.id
output storageAccountName string = storage.name
output resultsContainerId string = resultsContainer.id
output auditContainerId string = auditContainer.id
