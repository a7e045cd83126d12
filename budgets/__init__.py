"""Who pays: token counting, budget policies and the ledger (memory and Redis)."""
