"""Drives bastion with paramiko or asyncssh (Debian's python3 packages).

Usage: pyclient.py paramiko|asyncssh HOST PORT USER KEY KNOWN_HOSTS DIR

Verifies the host key against KNOWN_HOSTS, runs `echo out; echo err >&2;
exit 3`, then over SFTP puts DIR/up as up.dat, gets it back as
DIR/down and removes it. Prints one JSON object: the exec's stdout,
stderr and exit status, and the library's version.
"""
import asyncio
import json
import os
import sys

CMD = "echo out; echo err >&2; exit 3"


def with_paramiko(host, port, user, key, known_hosts, d):
    import paramiko

    c = paramiko.SSHClient()
    c.load_host_keys(known_hosts)
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect(host, port=port, username=user, key_filename=key,
              look_for_keys=False, allow_agent=False, timeout=20)
    try:
        _, out, err = c.exec_command(CMD, timeout=20)
        status = out.channel.recv_exit_status()
        res = {"stdout": out.read().decode(), "stderr": err.read().decode(), "status": status}
        sftp = c.open_sftp()
        sftp.put(os.path.join(d, "up"), "up.dat")
        sftp.get("up.dat", os.path.join(d, "down"))
        sftp.remove("up.dat")
        sftp.close()
    finally:
        c.close()
    res["version"] = paramiko.__version__
    return res


async def with_asyncssh(host, port, user, key, known_hosts, d):
    import asyncssh

    async with asyncssh.connect(host, port, username=user, client_keys=[key],
                                known_hosts=known_hosts, agent_path=None,
                                connect_timeout=20) as conn:
        r = await conn.run(CMD, check=False, timeout=20)
        res = {"stdout": r.stdout, "stderr": r.stderr, "status": r.exit_status}
        async with conn.start_sftp_client() as sftp:
            await sftp.put(os.path.join(d, "up"), "up.dat")
            await sftp.get("up.dat", os.path.join(d, "down"))
            await sftp.remove("up.dat")
    res["version"] = asyncssh.__version__
    return res


def main():
    lib, host, port, user, key, known_hosts, d = sys.argv[1:8]
    if lib == "paramiko":
        res = with_paramiko(host, int(port), user, key, known_hosts, d)
    else:
        res = asyncio.run(with_asyncssh(host, int(port), user, key, known_hosts, d))
    print(json.dumps(res))


main()
