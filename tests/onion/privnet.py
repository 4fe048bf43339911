"""A private Tor network on 127.0.0.1, for end-to-end tests: three directory authorities
(also relays), two relays, a client tor; the relay under test runs its own tor with
`torrc_fragment()` included, so it joins this network and no other.

The recipe is the one measured in shared/notes/tor.md (13 of 13 runs reachable in
26-48 s): TestingTorNetwork, every flag voted to every relay, a V3BandwidthsFile giving
every relay the same weight, UseEntryGuards 0 and VanguardsLiteEnabled 0 (a network this
small otherwise keeps choosing the guard as the last hop), and the first vote about 10 s
after launch. Nothing here can reach the internet: the only directory authorities are
ours, every address is 127.0.0.1, and no relay is an exit.

Every process is started with a recorded PID and stopped by `close()` (SIGTERM, then
SIGKILL after a grace: tor 0.4.9 sometimes hangs at shutdown).
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from onion.tor import TorProcess
from tests.onion.torfixtures import TOR
from tests.relayharness import free_ports

GENCERT = "/usr/bin/tor-gencert"
VOTING_INTERVAL = 20


def _common(authorities: list[str]) -> list[str]:
    return [
        "TestingTorNetwork 1",
        "PathsNeededToBuildCircuits 0.67",
        "TestingDirAuthVoteExit *",
        "TestingDirAuthVoteHSDir *",
        "TestingDirAuthVoteGuard *",
        "TestingMinExitFlagThreshold 0",
        "V3AuthNIntervalsValid 2",
        "ClientUseIPv6 0",
        "UseEntryGuards 0",
        "VanguardsLiteEnabled 0",
        "GeoIPFile /dev/null",
        "GeoIPv6File /dev/null",
        *authorities,
    ]


def _relay_lines(orport: int) -> list[str]:
    return [
        f"ORPort 127.0.0.1:{orport}",
        "Address 127.0.0.1",
        "AssumeReachable 1",
        "ExitRelay 0",
        "ExitPolicy reject *:*",
        "ServerDNSDetectHijacking 0",
        "ServerDNSTestAddresses",
        "ServerDNSResolvConfFile /dev/null",
    ]


def _fingerprint(data_dir: Path) -> str:
    done = subprocess.run(
        [TOR, "--ignore-missing-torrc", "-f", "/dev/null", "--DataDirectory", str(data_dir),
         "--ORPort", "1", "--list-fingerprint", "--quiet"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    line = done.stdout.strip().splitlines()[-1]
    return "".join(line.split()[1:])


def rss_mib(pid: int) -> float:
    """A process's resident memory in MiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else 0.0


@dataclass
class Node:
    name: str
    data_dir: Path
    torrc: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = [f"DataDirectory {self.data_dir}", "Nickname " + self.name, *self.torrc]
        lines += [f"Log notice file {self.data_dir / 'notice.log'}", "SafeLogging 1"]
        (self.data_dir / "torrc").write_text("\n".join(lines) + "\n")
        with (self.data_dir / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                [TOR, "--defaults-torrc", "/dev/null", "-f", str(self.data_dir / "torrc")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is not None:
            TorProcess(self.process, self.data_dir, 0).stop()  # SIGTERM, then SIGKILL

    @property
    def log(self) -> str:
        path = self.data_dir / "notice.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class PrivateTorNetwork:
    root: Path
    nodes: list[Node] = field(default_factory=list)
    authority_lines: list[str] = field(default_factory=list)
    client_socks: int = 0
    client_control: int = 0
    started_at: float = 0.0

    def start(self) -> None:
        """Creates keys and starts the authorities, relays and the client tor."""
        ports = free_ports(3 * 2 + 2 + 2)
        auth_ports = [(ports[2 * i], ports[2 * i + 1]) for i in range(3)]
        relay_ports = ports[6:8]
        self.client_socks, self.client_control = ports[8:10]
        fingerprints: list[str] = []
        authorities = []
        for i, (orport, dirport) in enumerate(auth_ports):
            name = f"auth{i}"
            data = self.root / name
            keys = data / "keys"
            keys.mkdir(mode=0o700, parents=True)
            subprocess.run(
                [GENCERT, "--create-identity-key", "--passphrase-fd", "0",
                 "-i", str(keys / "authority_identity_key"),
                 "-s", str(keys / "authority_signing_key"),
                 "-c", str(keys / "authority_certificate"),
                 "-m", "12", "-a", f"127.0.0.1:{dirport}"],
                input="\n", capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            cert = (keys / "authority_certificate").read_text()
            found = re.search(r"^fingerprint ([0-9A-F]{40})$", cert, re.M)
            assert found, cert
            fingerprint = _fingerprint(data)
            fingerprints.append(fingerprint)
            self.authority_lines.append(
                f"DirAuthority {name} orport={orport} no-v2 v3ident={found.group(1)} "
                f"127.0.0.1:{dirport} {fingerprint}"
            )
            authorities.append((name, data, orport, dirport))
        relays = []
        for i, orport in enumerate(relay_ports):
            data = self.root / f"relay{i}"
            data.mkdir(mode=0o700, parents=True)
            fingerprints.append(_fingerprint(data))
            relays.append((f"relay{i}", data, orport))
        bandwidths = self.root / "bandwidths"
        bandwidths.write_text(
            f"{int(time.time())}\n" + "".join(f"node_id=${fp} bw=1000\n" for fp in fingerprints)
        )
        common = _common(self.authority_lines)
        offset = int(time.time() + 10) % VOTING_INTERVAL
        for name, data, orport, dirport in authorities:
            self.nodes.append(
                Node(
                    name,
                    data,
                    [
                        *common,
                        *_relay_lines(orport),
                        f"DirPort 127.0.0.1:{dirport}",
                        "AuthoritativeDirectory 1",
                        "V3AuthoritativeDirectory 1",
                        f"V3BandwidthsFile {bandwidths}",
                        f"V3AuthVotingInterval {VOTING_INTERVAL}",
                        "V3AuthVoteDelay 4",
                        "V3AuthDistDelay 4",
                        f"TestingV3AuthInitialVotingInterval {VOTING_INTERVAL}",
                        "TestingV3AuthInitialVoteDelay 4",
                        "TestingV3AuthInitialDistDelay 4",
                        f"TestingV3AuthVotingStartOffset {offset}",
                        "SocksPort 0",
                    ],
                )
            )
        for name, data, orport in relays:
            self.nodes.append(Node(name, data, [*common, *_relay_lines(orport), "SocksPort 0"]))
        self.nodes.append(
            Node(
                "client",
                self.root / "client",
                [
                    *common,
                    f"SocksPort 127.0.0.1:{self.client_socks} ExtendedErrors",
                    f"ControlPort 127.0.0.1:{self.client_control}",
                    "CookieAuthentication 1",
                    f"ClientOnionAuthDir {self.root / 'client-auth'}",
                ],
            )
        )
        (self.root / "client-auth").mkdir(mode=0o700)
        self.started_at = time.monotonic()
        for node in self.nodes:
            node.start()

    def torrc_fragment(self) -> Path:
        """What a tor must add to its torrc to join this network (and no other)."""
        path = self.root / "join.torrc"
        path.write_text("\n".join(_common(self.authority_lines)) + "\n")
        return path

    def client(self) -> Node:
        return self.nodes[-1]

    def running(self) -> list[str]:
        """Names of nodes that have exited (should be none)."""
        return [
            n.name for n in self.nodes if n.process is not None and n.process.poll() is not None
        ]

    def rss_mib(self) -> float:
        """Resident memory of the network's tor processes together."""
        return sum(
            rss_mib(n.process.pid)
            for n in self.nodes
            if n.process is not None and n.process.poll() is None
        )

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {n.name}\n" + "\n".join(n.log.splitlines()[-15:]) for n in self.nodes
        )
