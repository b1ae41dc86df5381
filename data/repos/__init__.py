"""Repositories: keyword-only functions over a ``sqlmodel.Session``, one module per domain."""
