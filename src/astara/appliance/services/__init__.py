"""One module per Linux subsystem the appliance drives; each applies a plan idempotently."""
