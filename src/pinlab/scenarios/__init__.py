"""Kernel programs for the race explorer: the harness, and (to come) named scenarios."""
