import stages  # noqa: F401  (the benchmarks import albumentations too: offline, as the stages)
