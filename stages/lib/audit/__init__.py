"""What the data report says about the data: leakage, the shortcut audit, counts and image statistics, unusual inputs, licences."""
