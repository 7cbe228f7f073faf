"""Torch-free media preprocessing shared by training and serving (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

__all__: list[str] = []
