"""What a reader sees: figures, the summary, the HTML report, model cards."""
