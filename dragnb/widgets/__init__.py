"""The ipycanvas workbench (:class:`~dragnb.widgets.workbench.Workbench`) and its internals view."""
