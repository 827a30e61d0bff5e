"""SCIM 2.0 provisioning (RFC 7643/7644): people and groups from the identity provider.

`models` says what is published, `mapping` turns resources into records and back, and
`directory` keeps them in the store under scim2-server's protocol handling.
"""
