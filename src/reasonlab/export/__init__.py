"""Export reasonlab tasks to other trainers' data formats (today: verl's RL parquet files)."""

from reasonlab.export.verl import compute_score, export_verl

__all__ = ["export_verl", "compute_score"]
