"""The bundled pipelines (``cacert.yaml``, ``acme.yaml``, ``examples/``) and ``schema.json``,
as package data: read them through ``importlib.resources.files(__name__)``.
"""
from __future__ import annotations

__all__: list[str] = []
