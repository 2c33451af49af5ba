"""The HTTP inference service and the officer review page."""
