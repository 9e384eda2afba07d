"""``DragSession``: the one DragGAN API the notebooks, the widget and the CLI use (see :mod:`.session`).

Its parts: the session itself (``session.py``), its point pairs (``points.py``), the model it drags
(``model.py``) and its files (``io.py``).
"""

from .io import SessionFileError
from .points import PointIndexError
from .session import DragSession, StepResult

__all__ = ["DragSession", "PointIndexError", "SessionFileError", "StepResult"]
