"""Deployment: the package for a PYNQ board (``bnnflow package``) and the simulated board's accelerator."""
