"""Services that join recsys and genservice for the routes (one responsibility each)."""
