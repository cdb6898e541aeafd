"""anomalens: explainable anomaly analysis with generative detectors, calibrated verdicts and evidence."""

__version__ = "0.1.0"

__all__ = ["__version__"]
