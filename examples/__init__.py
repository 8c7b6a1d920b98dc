"""Runnable examples of dawait; each module's ``main`` is also run by the test suite."""
