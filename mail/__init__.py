"""Mail from outside: Maildirs, IMAP and inotify sources, and strict parsing of hostile mail."""
