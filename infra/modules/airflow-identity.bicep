// The Airflow workers' identity when they run outside Azure: a user-assigned managed identity that
// trusts tokens of the workers' own OIDC issuer (a Kubernetes cluster anywhere, GitHub Actions, a
// managed Airflow service), through one federated credential per issuer/subject pair. The workers
// exchange their platform's token for an Entra ID token (workload identity federation), so no
// secret exists anywhere. docs/workload-identity.md gives the pairs per platform.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object

@description('Issuer/subject pairs the identity trusts: [{ name, issuer, subject }].')
param federatedCredentials array

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

// Entra ID refuses concurrent writes of federated credentials on one identity: one at a time.
@batchSize(1)
resource federated 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = [for credential in federatedCredentials: {
  parent: identity
  name: credential.name
  properties: {
    issuer: credential.issuer
    subject: credential.subject
    // The audience Entra ID expects in a token it is asked to exchange.
    audiences: [ 'api://AzureADTokenExchange' ]
  }
}]

output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
