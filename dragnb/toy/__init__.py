"""The procedural face data set (faces.py) and the training script of the bundled toyfaces model (train.py)."""
