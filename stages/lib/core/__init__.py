"""The plumbing every room uses: user errors, atomic files, provenance stamps, CSV rows, staging, pool workers."""
