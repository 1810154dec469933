"""The engine: the pipeline model, the step and provider plugins, runs, the daemon, the CLI."""
