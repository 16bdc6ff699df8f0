"""Model weights: resolve a Hugging Face revision, download it into the model store, verify it, record it.

``plan`` is pure (file selection, what is left to fetch, retention); ``hub`` is the adapter to the Hugging Face
hub; ``store`` owns the on-disk layout and the completion manifest; ``download`` ties them together and is what
both the local target (in-process) and the Kubernetes download Job (``python -m llm_platform.weights``) run.
"""
