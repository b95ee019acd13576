"""Evaluation: metrics, the evaluation harness and rendering."""
