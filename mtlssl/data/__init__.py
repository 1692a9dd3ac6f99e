"""Datasets and task specs."""
