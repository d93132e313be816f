"""Moving images without a registry (save, load, import, export) and publishing them (push)."""
