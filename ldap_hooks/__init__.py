"""Pre-spawn hooks that find or create each user's posixAccount entry in LDAP."""
