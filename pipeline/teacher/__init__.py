"""Teacher stage: load a checkpoint or train one (optionally as an expressive teacher)."""
