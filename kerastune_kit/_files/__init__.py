"""Files and locks: atomic writes, path checks, one live owner per folder or file."""
