"""A throwaway OpenLDAP server for tests: Debian's ``slapd`` on free loopback ports.

``Slapd(root).start()`` writes a ``slapd.conf`` (mdb backend, inetOrgPerson
and groupOfNames schema) and a self-signed certificate for 127.0.0.1 under
``root``, loads ``PEOPLE_LDIF`` with ``slapadd`` and runs ``slapd`` in the
foreground as the current user, listening on ``ldap://`` (StartTLS offered)
and ``ldaps://``. ``kill()`` stops it as a crash would; ``start()`` again
brings it back on the same ports with the same data. ``modify(ldif)`` runs
``ldapmodify`` as the directory's root account.

The directory (base ``dc=example,dc=org``): people under ``ou=people`` with
plain-text ``userPassword`` (slapd compares them; hashes work the same), a
service account ``cn=davbox,ou=services`` for search-then-bind, and
groupOfNames groups under ``ou=groups``. Authenticated accounts may read
everything but passwords; anonymous clients may only bind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from davbox.certs import write_self_signed
from tests.davserver import free_port

BASE = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root-secret-for-tests"
SERVICE_DN = f"cn=davbox,ou=services,{BASE}"
SERVICE_PASSWORD = "service-secret-for-tests"
PEOPLE = f"ou=people,{BASE}"
GROUPS = f"ou=groups,{BASE}"

# name -> password; every person's entry is uid=NAME,ou=people.
USERS = {
    "lena": "lena-ldap-password",
    "lars": "lars-ldap-password",
    "lotte": "lotte-ldap-password",
    "luuk": "luuk-ldap-password",
    "lieke": "lieke-ldap-password",
    "lodewijk": "lodewijk-ldap-password",
}
# group cn -> member names
GROUP_MEMBERS = {
    "finance": ["lena", "lars", "lotte", "lodewijk"],
    "hr": ["lena", "luuk"],
    "unmapped": ["lena", "lars"],
}


def person_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def _ldif() -> str:
    parts = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: davbox\nuserPassword: {SERVICE_PASSWORD}",
    ]
    for name, password in USERS.items():
        parts.append(
            f"dn: {person_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name.title()}\n"
            f"sn: Tester\ndisplayName: {name.title()} Tester\nmail: {name}@example.org\n"
            f"userPassword: {password}"
        )
    for group, members in GROUP_MEMBERS.items():
        lines = [f"dn: cn={group},{GROUPS}", "objectClass: groupOfNames", f"cn: {group}"]
        lines += [f"member: {person_dn(name)}" for name in members]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _config(root: Path) -> str:
    return f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
TLSCertificateFile {root}/cert.pem
TLSCertificateKeyFile {root}/key.pem
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {root}/db
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by users read by * none
"""


def _program(name: str) -> str:
    # slapd and slapadd live in /usr/sbin, which is not on every user's PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError(
            f"{name} is not installed (scripts/test.sh installs the slapd and ldap-utils packages)"
        )
    return path


class Slapd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.tls_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert = root / "cert.pem"
        self.log_path = root / "slapd.log"
        self._prepared = False
        self.programs: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def _prepare(self) -> None:
        self.programs = {name: _program(name) for name in ("slapd", "slapadd", "ldapmodify")}
        (self.root / "db").mkdir(parents=True)
        write_self_signed(["127.0.0.1"], self.cert, self.root / "key.pem")
        (self.root / "slapd.conf").write_text(_config(self.root))
        (self.root / "data.ldif").write_text(_ldif())
        subprocess.run(
            [
                self.programs["slapadd"],
                "-f",
                str(self.root / "slapd.conf"),
                "-l",
                str(self.root / "data.ldif"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._prepared = True

    def start(self, timeout: float = 20) -> Slapd:
        if not self._prepared:
            self._prepare()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.programs["slapd"],
                    "-d",
                    "0",  # stay in the foreground, log nothing but errors
                    "-f",
                    str(self.root / "slapd.conf"),
                    "-h",
                    f"{self.url}/ {self.ldaps_url}/",
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        for port in (self.port, self.tls_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"slapd exited early:\n{self.log_path.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("slapd did not listen in time") from None
                    time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: the directory vanishes as if its machine went down."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change (``changetype: modify`` etc.) as the root account."""
        subprocess.run(
            [self.programs["ldapmodify"], "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
