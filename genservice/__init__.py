"""tailorshot genservice: briefs, prompts, diffusion backends, composition, jobs, cache,
storage and safety. Knows nothing of users or recsys: it takes a brief."""
