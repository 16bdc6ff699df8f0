"""Kubernetes objects for the catalog: pure renderers (``render``) and offline schema validation (``validation``)."""
