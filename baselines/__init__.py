"""Baselines registered with the harness (see harness/registry.py)."""
