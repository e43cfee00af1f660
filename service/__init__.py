"""Runtime wiring and the bafang command line."""
