"""Evaluation pipeline: preprocess -> parse -> metrics -> registration -> evaluators."""
