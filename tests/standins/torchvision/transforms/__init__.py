"""TEST STAND-IN (see torchvision/__init__.py)."""
