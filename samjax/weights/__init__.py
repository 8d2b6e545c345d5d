"""Checkpoints in and out: PyTorch `.pth` reading without torch (`pth`), the generic key-table helpers (`keys`), one
converter per model family (`sam`, ...), MAE encoder initialisation (`mae`), position-table resizing
(`resolution`), and samjax model directories (`store`: config.json + orbax params)."""
