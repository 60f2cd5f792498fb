"""Deploying a trained model: export, int8, pruning and distillation."""
