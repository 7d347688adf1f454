"""Scoring runs: metrics, evaluation, comparisons between runs, post-hoc calibration, conformal sets, operating points, subgroups, the OOD score."""
