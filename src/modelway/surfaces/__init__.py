"""REST dialects: parsing and rendering per documented API (OpenAI first)."""
