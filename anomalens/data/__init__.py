"""Data: loaders for the shared benchmark data and (later) modality adapters and anomaly synthesis."""

from anomalens.data.datasets import adbench_path, load_adbench, semi_supervised_split, shared_data_dir

__all__ = ["adbench_path", "load_adbench", "semi_supervised_split", "shared_data_dir"]
