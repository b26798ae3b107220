"""The environment model: what the user declares in YAML, loaded, checked and placed before any SSH."""
