"""Hydra configs of charrnn, shipped as the package ``charrnn.conf`` (see pyproject.toml)."""
