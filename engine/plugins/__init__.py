"""The plugin interfaces and their discovery: steps and service providers, from entry points."""
