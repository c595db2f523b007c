#!/bin/sh
# Assemble /etc/asterisk from the mounted repository directories, write the AMI user's secret
# and allowed addresses from the environment, then run Asterisk in the foreground (it drops to
# the asterisk user itself).
set -eu

for file in /opt/cti/asterisk-conf/*.conf; do
    ln -sf "$file" /etc/asterisk/
done
# extensions.conf includes dialplans/*.conf relative to /etc/asterisk.
ln -sfn /opt/cti/dialplans /etc/asterisk/dialplans

# manager.conf ends [cti] with `#tryinclude manager_cti_local.conf`: the secret never sits in
# the repository. Without CTI_AMI_SECRET the AMI user simply cannot log in.
umask 027
{
    if [ -n "${CTI_AMI_SECRET:-}" ]; then
        printf 'secret = %s\n' "$CTI_AMI_SECRET"
    else
        echo "cti-asterisk: CTI_AMI_SECRET is empty, the cti AMI user cannot log in" >&2
    fi
    for address in ${CTI_AMI_PERMIT:-}; do
        printf 'permit = %s\n' "$address"
    done
} > /etc/asterisk/manager_cti_local.conf
chown root:asterisk /etc/asterisk/manager_cti_local.conf

# Logs (queue_log included) readable by the cti container, which mounts the same volume.
umask 022
chown -R asterisk:asterisk /var/log/asterisk /var/lib/asterisk /var/spool/asterisk /var/run/asterisk 2>/dev/null || true
exec asterisk -f -U asterisk -G asterisk -vvv
