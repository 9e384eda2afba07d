"""Compatibility alias: ``DragSession`` lives in :mod:`dragnb.session`; this name is kept for one release."""

from ..session import DragSession, PointIndexError, StepResult  # noqa: F401
