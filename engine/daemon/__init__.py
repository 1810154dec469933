"""``certwright daemon``: one process serving many runs, reacting to mail, files and deadlines."""
