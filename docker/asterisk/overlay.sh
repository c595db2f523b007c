#!/bin/sh
# overlay.sh ETC — the compose lab's overlay on the shipped configuration copied into ETC: the
# same edits as the real-PBX tier's (tests/pbx/lab.py, overlay()), with the lab's ports, plus RTP
# on the transport's address. Every socket Asterisk opens must be on 127.0.0.1: the container
# runs with host networking and the lab's passwords are public. Each edit must find its text
# exactly once in the shipped file, or this stops with an error: a change there breaks the lab
# loudly instead of silently exposing it. docs/asterisk.md ("The compose lab") lists the edits;
# tests/test_asterisk_conf.py runs this on the shipped files.
set -eu

etc="$1"
ami_port="${CTI_LAB_AMI_PORT:-5038}"
sip_port="${CTI_LAB_SIP_PORT:-5060}"
pstn_port="${CTI_LAB_PSTN_PORT:-5070}"
caller_ports="${CTI_LAB_CALLER_PORTS:-5071 5072 5073}"
agi_port="${CTI_LAB_AGI_PORT:-4573}"

edit() {  # file old new: replace the one occurrence of `old` (literal text; `\n` in new = newline)
    count="$(awk -v old="$2" '{ s = $0; while ((i = index(s, old)) > 0) { n++; s = substr(s, i + length(old)) } }
        END { print n + 0 }' "$etc/$1")"
    if [ "$count" != 1 ]; then
        echo "cti-asterisk: overlay: $1 holds '$2' $count times, expected once" >&2
        exit 1
    fi
    awk -v old="$2" -v new="$3" '{ i = index($0, old); if (i) $0 = substr($0, 1, i - 1) new substr($0, i + length(old)); print }' \
        "$etc/$1" >"$etc/$1.new"
    mv "$etc/$1.new" "$etc/$1"
}

edit manager.conf "port = 5038" "port = $ami_port"
edit manager.conf "bindaddr = 0.0.0.0" "bindaddr = 127.0.0.1"
edit pjsip.conf "bind = 0.0.0.0:5060" "bind = 127.0.0.1:$sip_port"
edit pjsip.conf "contact = sip:sip.operator.example:5060" "contact = sip:127.0.0.1:$pstn_port"
matches=""
for port in $caller_ports; do
    matches="${matches:+$matches\\n}match = 127.0.0.1:$port"
done
edit pjsip.conf "match = sip.operator.example" "$matches"
edit extensions.conf "CTI_AGI_HOST=127.0.0.1:4573" "CTI_AGI_HOST=127.0.0.1:$agi_port"
# RTP: an endpoint without `transport` binds its media to every interface; with the transport
# named, to the transport's address (127.0.0.1). One line per endpoint template.
edit pjsip.conf "context = cti-agents" "context = cti-agents\\ntransport = transport-udp"
edit pjsip.conf "context = cti-inbound" "context = cti-inbound\\ntransport = transport-udp"
# Deploy step 6: the queue_log (res_config_pgsql) and CEL (cel_pgsql) go to the database
# `asterisk` of the lab's PostgreSQL, on its port (5433: beside a PostgreSQL on 5432). An edit,
# not a second `port` in pgsql_cti_local.conf: Asterisk reads the first value of a repeated key.
# Only with CTI_LAB_PG_PORT set (the compose lab sets it): the scale-out stack, which runs this
# overlay too, has already pointed both files at its own port and database
# (docker/scaleout/asterisk-entrypoint.sh).
if [ -n "${CTI_LAB_PG_PORT:-}" ]; then
    edit res_pgsql.conf "port = 5432" "port = $CTI_LAB_PG_PORT"
    edit cel_pgsql.conf "port = 5432" "port = $CTI_LAB_PG_PORT"
fi
