"""The pipeline model: a YAML file to a validated, frozen spec, and what reads the spec."""
