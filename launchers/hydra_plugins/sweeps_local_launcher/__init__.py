"""Hydra launcher that runs each job in its own local process, one per slot (GPU or CPU worker)."""
