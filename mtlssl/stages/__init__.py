"""The stages: each a plain ``run(cfg, run_dir) -> metrics`` plus a thin Hydra ``main``."""
