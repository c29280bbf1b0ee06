"""Persistence layer: the project database and feature files. Imports neither torch nor gradio."""

from .db import DB_FILENAME, SCHEMA_VERSION, connect, now, schema_version, transaction
from .features import FeatureStore
from .sql import CHUNK, in_chunks

__all__ = [
    "CHUNK",
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "FeatureStore",
    "connect",
    "in_chunks",
    "now",
    "schema_version",
    "transaction",
]
