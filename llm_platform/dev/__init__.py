"""Developer tools: the offline demo model."""
