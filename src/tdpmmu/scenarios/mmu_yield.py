"""Default TDP MMU scenarios (realistic KVM flows), group yield."""

from __future__ import annotations
