"""Synthetic tasks with known answers (needle in a haystack) and the models trained on them."""
