"""Registries: the HTTP client (retries, token auth), credentials, registry configuration."""
