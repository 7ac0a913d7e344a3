"""Data: decoding, transforms, datasets and statistics. Knows nothing of models."""
