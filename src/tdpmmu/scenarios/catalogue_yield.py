"""Catalogue defects (shared/reference/bugs.md), group yield: see catalogue.py."""

from __future__ import annotations

from .registry import register_catalogue_defect  # noqa: F401
