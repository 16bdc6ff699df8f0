"""Serving targets behind one interface: ``local`` (vLLM on CPU here) and ``kubernetes`` (production)."""
