#!/bin/sh
# Entrypoint of the ssh-machine image. Installs the SSH host key and the login keys given at
# `docker run`, then runs sshd in the foreground as the container's main process.
#
# Host key (ed25519), first found wins:
#   MACHINE_SSH_HOST_KEY   the private key text (OpenSSH format)
#   /etc/machine/ssh_host_ed25519_key   a mounted file
#   otherwise a key generated at the first start (kept across restarts).
# Either way the public key is printed as "machine-host-key: <key>" to the container log.
#
# Login keys:
#   MACHINE_AUTHORIZED_KEYS  public key lines; and/or /etc/machine/authorized_keys (mounted)
#   MACHINE_USER             account they are for (default root); other names are created
#                            with a home, no password and passwordless sudo.
set -eu
umask 077

key=/etc/ssh/ssh_host_ed25519_key
if [ -n "${MACHINE_SSH_HOST_KEY:-}" ]; then
    printf '%s\n' "$MACHINE_SSH_HOST_KEY" > "$key"
elif [ -f /etc/machine/ssh_host_ed25519_key ]; then
    cat /etc/machine/ssh_host_ed25519_key > "$key"
elif [ ! -s "$key" ]; then
    # first start without a given key; a restarted container keeps the key it generated
    ssh-keygen -q -t ed25519 -N '' -C '' -f "$key" </dev/null
fi
unset MACHINE_SSH_HOST_KEY
chmod 600 "$key"
if ! ssh-keygen -y -f "$key" > "$key.pub"; then
    echo "machine: the given SSH host key is not a valid unencrypted private key" >&2
    exit 1
fi
chmod 644 "$key.pub"
echo "machine-host-key: $(cat "$key.pub")"

user="${MACHINE_USER:-root}"
if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash "$user"
    usermod -p '*' "$user"  # no password, but not "locked": key logins work without PAM
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" > /etc/sudoers.d/machine-user
    chmod 440 /etc/sudoers.d/machine-user
fi
home="$(getent passwd "$user" | cut -d: -f6)"
group="$(id -gn "$user")"
install -d -m 700 -o "$user" -g "$group" "$home/.ssh"
keys="$home/.ssh/authorized_keys"
: > "$keys"
if [ -n "${MACHINE_AUTHORIZED_KEYS:-}" ]; then
    printf '%s\n' "$MACHINE_AUTHORIZED_KEYS" >> "$keys"
fi
if [ -f /etc/machine/authorized_keys ]; then
    cat /etc/machine/authorized_keys >> "$keys"
fi
chown "$user:$group" "$keys"
chmod 600 "$keys"
if [ ! -s "$keys" ]; then
    echo "machine: no authorized key given (MACHINE_AUTHORIZED_KEYS or /etc/machine/authorized_keys)" >&2
fi

mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
