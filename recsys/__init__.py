"""tailorshot recsys: embeddings, vector index, taste profiles, segments, recommendations,
exploration policies and offline evaluation. Never imports genservice."""
