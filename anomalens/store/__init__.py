"""The store of normal exemplars: nearest normal cases as evidence (chromadb)."""

from anomalens.store.exemplars import ExemplarHit, ExemplarStore

__all__ = ["ExemplarHit", "ExemplarStore"]
