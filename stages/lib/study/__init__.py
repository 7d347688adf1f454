"""The study's data from its public sources (make study-data)."""
