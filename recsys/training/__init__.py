"""Training of the small embedded CLIP model (``tailorshot train clip``)."""
