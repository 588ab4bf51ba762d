"""Model wrappers: weights load lazily in `warm_up()`, never at import."""
