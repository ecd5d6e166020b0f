"""Versioned contracts between the parts (appliance API v1, Neutron notifications)."""
