"""Training helpers: the recipe runner, callbacks, precision, distribution, tuning."""
