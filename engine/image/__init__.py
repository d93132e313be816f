"""Images: references, manifests and configs, platform choice, and the images the store holds."""
