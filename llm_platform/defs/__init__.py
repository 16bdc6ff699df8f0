"""Dagster wiring: partitions, assets, checks, jobs, sensors and resources, built from a validated catalog."""
