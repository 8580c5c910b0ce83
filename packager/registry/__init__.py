"""The model registry behind one small protocol (``Store``, in ``store.py``): MLflow
(``mlflow_store.py``; the embedded SQLite store in the working directory by default, or any MLflow
tracking server), and an in-memory store for tests (``memory.py``, ``memory://NAME``). What a
version carries is in ``lineage.py``; ``pyfunc.py`` is the code MLflow runs to serve it.

Four modules import mlflow: ``mlflow_store.py`` and ``signature.py`` (the logged model's
signature), both lazily; ``pyfunc.py``, at the top, as it runs where MLflow serves a version; and
outside this package ``packager.runtime.registered`` (``models:/`` URIs), lazily. The rest of the
registry (``store.py``, ``memory.py``, ``lineage.py``, ``requirements.py``) works without it."""

from __future__ import annotations

from packager.registry.store import MEMORY_SCHEME, Store


def open_store(tracking_uri: str | None = None) -> Store:
    """The registry at ``tracking_uri``: ``memory://NAME`` for an in-memory one (shared by name
    within the process), anything else for MLflow."""
    if tracking_uri and tracking_uri.startswith(MEMORY_SCHEME):
        from packager.registry.memory import memory_store

        return memory_store(tracking_uri)
    from packager.registry.mlflow_store import MlflowStore

    return MlflowStore(tracking_uri)
