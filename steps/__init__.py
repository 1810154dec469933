"""The built-in steps: generic, waits, keys, mail, the built-in CA, install and ACME."""
