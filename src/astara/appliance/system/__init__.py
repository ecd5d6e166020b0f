"""Low-level system access: namespaces, child processes, atomic files."""
