"""A real PostgreSQL server for tests (not a test module).

`postgres_url` starts a throwaway server on 127.0.0.1 at a free port (trust
auth, fsync off, no Unix socket), yields a SQLAlchemy URL for a fresh
database, and stops the server and removes its folder afterwards. Where no
server can be started (binaries or psycopg missing, initdb or start failing)
it skips the test, with the reason.

The binaries are found in, by order: `$KTK_PG_BINDIR` (alone, when set),
`pg_config --bindir`, the newest `/usr/lib/postgresql/*/bin`, the `PATH`.
As root, they run as the `postgres` OS user (initdb refuses root).
"""

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile

import pytest

DATABASE = "ktk_tests"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")


def _has_server_binaries(folder):
    return all(os.access(os.path.join(folder, name), os.X_OK) for name in SERVER_BINARIES)


def find_bindir():
    """The folder of the server's binaries, or `None`."""
    if "KTK_PG_BINDIR" in os.environ:
        folder = os.environ["KTK_PG_BINDIR"]
        return folder if _has_server_binaries(folder) else None
    candidates = []
    if shutil.which("pg_config"):
        # pg_config may come from libpq-dev alone, without the server.
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if result.returncode == 0:
            candidates.append(result.stdout.strip())

    def version(folder):
        name = os.path.basename(os.path.dirname(folder))
        return [int(part) for part in name.split(".") if part.isdigit()]

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    return next((folder for folder in candidates if _has_server_binaries(folder)), None)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(text, lines=15):
    return "\n".join(text.strip().splitlines()[-lines:])


def postgres_url(tmp_path_factory):
    """Fixture body: yields `postgresql+psycopg://postgres@127.0.0.1:PORT/ktk_tests`
    for a running server, then stops it (`pg_ctl stop -m immediate`)."""
    try:
        import psycopg
    except ImportError as error:
        pytest.skip(f"PostgreSQL tests need psycopg 3 (pip install 'psycopg[binary]'): {error}")
    bindir = find_bindir()
    if bindir is None:
        searched = os.environ.get("KTK_PG_BINDIR") or (
            "pg_config --bindir, /usr/lib/postgresql/*/bin or PATH")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) in "
                    f"{searched}; on Debian: apt-get install postgresql")

    as_postgres = os.geteuid() == 0
    if as_postgres:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` OS user to run PostgreSQL")
        # pytest's temp folders are private to root (0700): postgres could not
        # reach a folder inside them.
        folder = tempfile.mkdtemp(prefix="ktk-postgres-")
        shutil.chown(folder, "postgres", "postgres")
    else:
        folder = str(tmp_path_factory.mktemp("postgres"))
    data = os.path.join(folder, "data")
    log = os.path.join(folder, "server.log")

    def run(binary, *args):
        command = [os.path.join(bindir, binary), *args]
        if as_postgres and shutil.which("runuser"):
            command = ["runuser", "-u", "postgres", "--", *command]
        elif as_postgres:
            command = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)]
        return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)

    def read_log():
        try:
            with open(log) as file:
                return file.read()
        except OSError:
            return ""

    started = False
    try:
        result = run("initdb", "-D", data, "--username=postgres", "--auth=trust",
                     "--encoding=UTF8", "--no-locale", "--no-sync")
        if result.returncode:
            pytest.skip(f"PostgreSQL initdb failed ({bindir}):\n{_tail(result.stderr)}")
        settings = ("listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = ''\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        with open(os.path.join(data, "postgresql.conf"), "a") as file:
            file.write(settings)
        with open(os.path.join(data, "pg_hba.conf"), "w") as file:
            file.write("host all all 127.0.0.1/32 trust\n")

        # A free port may be taken between the probe and the start: try three.
        for _ in range(3):
            port = _free_port()
            result = run("pg_ctl", "start", "-D", data, "-l", log, "-w", "-t", "60",
                         "-o", f"-p {port}")
            started = result.returncode == 0
            if started or "could not bind" not in read_log():
                break
        if not started:
            pytest.skip(f"PostgreSQL did not start ({bindir}):\n"
                        f"{_tail(result.stderr + read_log())}")

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            run("pg_ctl", "stop", "-D", data, "-m", "immediate", "-w")
        shutil.rmtree(folder, ignore_errors=True)
