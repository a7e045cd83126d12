"""tiergate: the service (HTTP edge, config, auth, cache, records, CLI)."""
