"""Training: datasets, losses, regularizers, EMA, the loop and sample grids (``ganrt train``)."""
