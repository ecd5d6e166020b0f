"""The ``astara`` command: parses arguments, wires dependencies, prints. No logic."""
