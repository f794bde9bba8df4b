"""Hydra launcher that runs each job as a one-time run on Azure Databricks (Jobs API runs/submit)."""
