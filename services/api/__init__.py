"""The operators' HTTP API (`/api/v1/...`): shop-scoped tokens, audited writes, OpenAPI."""
