"""Data: loaders for the shared benchmark data and anomaly synthesis with ground truth (modality adapters to come)."""

from anomalens.data.datasets import adbench_path, load_adbench, semi_supervised_split, shared_data_dir
from anomalens.data.synthesis import ANOMALY_TYPES, Synthesized, synthesize

__all__ = ["ANOMALY_TYPES", "Synthesized", "synthesize", "adbench_path", "load_adbench", "semi_supervised_split", "shared_data_dir"]
