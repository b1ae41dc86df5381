"""HTTP routes under ``/v1`` (one module per audience) and the ops routes."""
