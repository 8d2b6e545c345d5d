"""TEST STAND-IN (see timm/__init__.py)."""
