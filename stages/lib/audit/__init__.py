"""What the data report says about the data: leakage, the shortcut audits, counts and image statistics, unusual
inputs, sources and licences."""
