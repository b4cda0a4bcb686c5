"""Kernel threads for the race explorer: the harness, and the named hazard scenarios."""
