#!/bin/sh
# The lab's Asterisk: the deployment steps of docs/asterisk.md ("Deploy beside your Asterisk")
# on the shipped files, the lab's overlay on top (overlay.sh: loopback only, the lab's ports, the
# test trunk), then Asterisk in the foreground (it runs as the asterisk user: asterisk.conf).
set -eu

shipped=/opt/cti/asterisk-conf
etc=/etc/asterisk

# Deploy step 2: copy the configuration (copies, not links: the overlay edits them, the mounted
# repository stays as it is).
for file in "$shipped"/*.conf; do
    cp "$file" "$etc/"
done
rm -rf "$etc/dialplans"
cp -r /opt/cti/dialplans "$etc/dialplans"

sh /usr/local/lib/cti/overlay.sh "$etc"

# Deploy step 4: the AMI user's secret and the daemon's address (manager.conf's [cti] ends with
# `#tryinclude manager_cti_local.conf`: the secret never sits in the repository).
umask 027
{
    if [ -n "${CTI_AMI_SECRET:-}" ]; then
        printf 'secret = %s\n' "$CTI_AMI_SECRET"
    else
        echo "cti-asterisk: CTI_AMI_SECRET is empty, the cti AMI user cannot log in" >&2
    fi
    for address in ${CTI_AMI_PERMIT:-127.0.0.1/255.255.255.255}; do
        printf 'permit = %s\n' "$address"
    done
} >"$etc/manager_cti_local.conf"
chown root:asterisk "$etc/manager_cti_local.conf"
chmod 640 "$etc/manager_cti_local.conf"

# Deploy step 6: the password of the role asterisk, with which res_config_pgsql (the queue_log)
# and cel_pgsql (CEL) log in to the lab's PostgreSQL (res_pgsql.conf and cel_pgsql.conf end with
# `#tryinclude pgsql_cti_local.conf`; the overlay set their port).
if [ -n "${CTI_LAB_ASTERISK_DB_PASSWORD:-}" ]; then
    printf 'password = %s\n' "$CTI_LAB_ASTERISK_DB_PASSWORD" >"$etc/pgsql_cti_local.conf"
fi
if [ -e "$etc/pgsql_cti_local.conf" ]; then  # (the scale-out stack writes its own: copied above)
    chown root:asterisk "$etc/pgsql_cti_local.conf"
    chmod 640 "$etc/pgsql_cti_local.conf"
else
    echo "cti-asterisk: CTI_LAB_ASTERISK_DB_PASSWORD is empty, Asterisk logs in to PostgreSQL" \
        "with the password 'asterisk'" >&2
fi

# Logs (queue_log and the CDRs included) readable by the cti container, which mounts the same
# volume read-only.
umask 022
install -d -o asterisk -g asterisk /var/log/asterisk/cdr-csv
chown -R asterisk:asterisk /var/log/asterisk /var/lib/asterisk /var/spool/asterisk /run/asterisk \
    /var/cache/asterisk
exec asterisk -f -vvv
