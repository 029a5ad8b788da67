"""The ``ICBPL`` estimator: its parameters, input checks, training loop, warm starts, files."""
