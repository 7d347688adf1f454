"""DVC stages: one module per stage in dvc.yaml; the reusable code lives in stages.lib."""
