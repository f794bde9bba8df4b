"""Hydra sweeper running an Optuna study through ask/tell: no batch barrier, pruning, resume."""
