"""tailorshot api: the composition root (HTTP app, CLI, services joining recsys and genservice)."""
