"""Planning before the GPU hour: a simulated vLLM server and the search for a starting config (pure core)."""
