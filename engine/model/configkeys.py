"""The keys the configuration file knows, in a module of their own.

Kept apart from :mod:`certwright.engine.model.configfile` (which reads YAML) so that the
CLI's parser can name them in ``--help`` without importing a YAML library: ``--help`` must
start at once.
"""
from __future__ import annotations

__all__ = ["DAEMON_KEYS", "TOP_KEYS"]

#: the top-level keys of config.yaml
TOP_KEYS = ("live_dir", "store", "store_key", "host", "defaults", "pipelines", "daemon")
#: the daemon's keys, under ``daemon:`` (engine.daemon.config reads and checks their values)
DAEMON_KEYS = ("maildirs", "imap", "pipelines", "inbox", "embedded", "csr_pipeline",
               "csr_inputs", "unmatched_grace", "sync_interval", "suppress_mail_polls",
               "renew_check", "renew_retry", "renew_retry_cap", "imap_cafile",
               "embedded_domains", "ca_senders", "ca_origins", "maildir_owner",
               "maildir_group", "maildir_mode", "metrics_listen", "metrics_certificates",
               "heartbeat", "lease", "host", "maildir_poll")
