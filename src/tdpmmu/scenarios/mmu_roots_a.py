"""Default TDP MMU scenarios (realistic KVM flows), group roots_a."""

from __future__ import annotations
