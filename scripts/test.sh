#!/bin/sh
# Install everything the test suite needs, then run all of it.
# Debian packages (real WebDAV clients the tests drive, OpenLDAP's slapd for
# the LDAP tests) are installed when missing and when running as root; Python
# packages go into the active environment. Extra arguments are passed to pytest.
set -eu
cd "$(dirname "$0")/.."

# program:package pairs; a program found on PATH (or in /usr/sbin) needs nothing.
need=""
for pair in litmus:litmus cadaver:cadaver chromium:chromium slapd:slapd ldapmodify:ldap-utils \
    nextcloudcmd:nextcloud-desktop-cmd owncloudcmd:owncloud-client-cmd rclone:rclone; do
    program=${pair%%:*}
    command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
    else
        echo "missing programs:$need (install them with apt-get as root)" >&2
        exit 1
    fi
fi

python3 -m pip install -q -e ".[test]"
python3 -m ruff check .
python3 -m mypy davbox policies providers admin_ui
# One worker per core; a test module's tests stay in one worker (they share servers).
python3 -m pytest -n auto --dist loadfile "$@"
