"""The image modality: one image is a case, its units are regions of a grid (``modality.py``); the
reader (``reader.py``), the evidence items (``items.py``: the anomaly map, the matched normal
patches), the claims (``claims.py``), the flow (``flow.py``) and the pictures (``plot.py``)."""

from anomalens.modalities.images.modality import ImageModality, ImageSet

__all__ = ["ImageModality", "ImageSet"]
