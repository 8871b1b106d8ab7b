#!/bin/sh
# Install what bench/relay.py needs beyond the project's stack: Postfix with its LDAP tables and
# its test tools (smtp-source). The system Postfix stays unconfigured ("No configuration"): the
# benchmark runs a private instance from its own config directory and never touches /etc/postfix.
set -eu

if command -v smtp-source >/dev/null 2>&1 && [ -x /usr/sbin/postfix ] \
    && dpkg-query -W -f='${Status}' postfix-ldap 2>/dev/null | grep -q "install ok installed"; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

echo "bench/relay_setup.sh: installing postfix postfix-ldap (system instance left unconfigured)"
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    postfix postfix-ldap
