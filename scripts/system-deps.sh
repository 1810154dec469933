#!/usr/bin/env bash
# Install the Debian packages the tests use (real Apache, Chromium, Pebble, Dovecot, Postfix,
# certbot, acme-tiny, lego, uacme, faketime, PostgreSQL (the tests initdb clusters of their
# own); sudo, and systemd's systemd-analyze, -sysusers and -tmpfiles for the deployment kit
# in contrib/; zsh and fish to load the completion scripts), only those missing;
# `apt-get update` once, then one install.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in apache2 chromium pebble certbot acme-tiny lego uacme dovecot-imapd faketime openssl \
           postfix sudo systemd zsh fish postgresql; do
  have "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "system-deps: missing Debian packages: ${need[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix asks what kind of mail system this is: local only (the tests run their own
# instances on loopback, with their own configuration folders).
echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
# Debian starts services on install; the tests start their own on loopback ports.
for svc in apache2 dovecot postfix postgresql; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
  service "$svc" stop >/dev/null 2>&1 || true
done
