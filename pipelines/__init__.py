"""The built-in pipelines (``acme.yaml``, ``cacert.yaml``), their JSON Schema and examples."""
