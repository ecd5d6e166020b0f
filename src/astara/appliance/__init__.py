"""The appliance agent: serves the appliance API v1 and turns configs into Linux state."""
