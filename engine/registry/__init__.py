"""Registries: talking to a Docker Registry v2 / OCI distribution server.

client.py (Session, retries, v2 API, errors) · endpoints.py (mirrors, origin, plain http) ·
challenge.py (WWW-Authenticate) · auth.py (tokens, Basic) · credentials.py (docker config.json,
helpers, login/logout) · config.py (the TOML registry config) · resolve.py (a reference to its
verified manifest and config) · blobs.py (blob bytes: Range resume, reconnects, foreign layers).
"""
