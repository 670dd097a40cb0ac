"""Quality metrics (Fréchet distance, KID, Inception Score, precision/recall) and feature extractors."""
