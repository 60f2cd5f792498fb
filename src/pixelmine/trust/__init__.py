"""Trust: explanations, robustness to attacks and corruptions."""
