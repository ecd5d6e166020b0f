"""The orchestrator: intake of network events, and (later) queueing, reconcile and health."""
