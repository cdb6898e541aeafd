"""Serving anomalens: the REST API (``create_app``); ``anomalens serve`` runs it with uvicorn."""

from anomalens.server.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
