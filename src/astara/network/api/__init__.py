"""The Neutron v2.0-compatible HTTP API (FastAPI): routing, auth, errors. No rules live here."""
