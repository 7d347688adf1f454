"""The typed params schema (docs/params.md is generated from it)."""
