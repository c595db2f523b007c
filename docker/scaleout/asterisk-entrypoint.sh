#!/bin/sh
# The scale-out stack's Asterisk (pbx1, pbx2 in docker-compose.yml): the shipped configuration
# (mounted read-only at /opt/cti/shipped-conf), scale-out's edits on a copy of it, then the
# compose lab's own entrypoint, which copies that into /etc/asterisk, applies the lab's overlay
# (loopback binds, this PBX's ports from CTI_LAB_*: docker/asterisk/overlay.sh), writes the AMI
# login and runs Asterisk. Scale-out's edits, each of which must find its text exactly once:
#
#   rtp.conf                        rtpstart/rtpend = CTI_SCALEOUT_RTP: two PBXs on one host
#                                   network, each its own RTP range
#   res_pgsql.conf, cel_pgsql.conf  port = CTI_SCALEOUT_PG_PORT, dbname = CTI_SCALEOUT_RECORDS_DB:
#                                   each PBX writes its queue_log and CEL to its own database on
#                                   the stack's PostgreSQL (CEL has no server column)
#   pgsql_cti_local.conf            the password of the role asterisk (the file both include)
set -eu

: "${CTI_SCALEOUT_RTP:?}" "${CTI_SCALEOUT_PG_PORT:?}" "${CTI_SCALEOUT_RECORDS_DB:?}"
# The directories and the next step move for tests/test_scaleout_stack.py, which runs this file.
conf="${CTI_SCALEOUT_CONF:-/opt/cti/asterisk-conf}"
rm -rf "$conf" && mkdir -p "$conf"
cp "${CTI_SCALEOUT_SHIPPED:-/opt/cti/shipped-conf}"/*.conf "$conf/"

edit() {  # file old new: replace the one occurrence of the line `old` (whole line, literal)
    count="$(awk -v old="$2" '$0 == old { n++ } END { print n + 0 }' "$conf/$1")"
    if [ "$count" != 1 ]; then
        echo "cti-scaleout: $1 holds the line '$2' $count times, expected once" >&2
        exit 1
    fi
    awk -v old="$2" -v new="$3" '{ if ($0 == old) print new; else print }' "$conf/$1" >"$conf/$1.new"
    mv "$conf/$1.new" "$conf/$1"
}

set -- $CTI_SCALEOUT_RTP
edit rtp.conf "rtpstart = 10000" "rtpstart = $1"
edit rtp.conf "rtpend = 10099" "rtpend = $2"
for file in res_pgsql.conf cel_pgsql.conf; do
    edit "$file" "port = 5432" "port = $CTI_SCALEOUT_PG_PORT"
    edit "$file" "dbname = asterisk" "dbname = $CTI_SCALEOUT_RECORDS_DB"
done
if [ -n "${CTI_SCALEOUT_RECORDS_PASSWORD:-}" ]; then
    printf 'password = %s\n' "$CTI_SCALEOUT_RECORDS_PASSWORD" >"$conf/pgsql_cti_local.conf"
fi

exec "${CTI_SCALEOUT_NEXT:-/usr/local/bin/cti-asterisk-entrypoint}"
