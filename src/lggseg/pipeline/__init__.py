"""Use cases above inference and evaluation: predicting input files and folders, the demo."""
