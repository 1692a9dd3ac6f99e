"""Reporting: rich console, TensorBoard event files, metrics.json and the resolved config."""
