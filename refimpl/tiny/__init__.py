"""The tiny model of the course: refimpl.tiny.model (NumPy), refimpl.tiny.torch (PyTorch)."""
