"""Persistence layer: the project database and feature files. Imports neither torch nor gradio."""

from .db import DB_FILENAME, SCHEMA_VERSION, connect, now, schema_version, transaction
from .features import FeatureStore

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "FeatureStore", "connect", "now", "schema_version", "transaction"]
