"""Rule engine: legit behaviour and one module per fraud scenario (pure, vectorised numpy)."""
