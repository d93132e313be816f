"""Layers: decompression, the tar extractor, and snapshots (merged layer chains)."""
