"""A Flower deployment on one machine: a SuperLink, SuperNodes and ``flwr run`` as processes, on loopback.

The tests (``tests/test_deployment.py``) and the overhead benchmark
(``benchmarks/run_flower_overhead.py``) run Flower's deployment engine through it; a user can
try a deployment the same way before spreading it over machines (``docs/deployment.md`` gives
the same commands by hand)::

    from fedloop.flower.deploy import Deployment
    with Deployment("runs/deploy", {"n_clients": 3, "per_round": 3, "rounds": 2}) as dep:
        dep.start_superlink()
        for i in range(3):
            dep.start_supernode(i)
        dep.submit(dep.prepare_app())
        results = dep.wait_for_results(timeout=300)   # history and clients.json

Each process starts in its own session. Stopping one (by its PID) first lists what it spawned:
Flower starts its SuperExec, ServerApp and ClientApp processes detached (their own sessions),
so the group alone would miss them; the descendants are found through ``/proc`` and stopped
with it. The commands are the ones ``docs/deployment.md`` gives.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The example Flower app (a source checkout's ``examples/flower_app``), copied and configured per deployment.
APP = ROOT / "examples" / "flower_app"

__all__ = ["APP", "Deployment", "alive", "cli_missing", "descendants", "free_port", "make_certificates"]
BIN = Path(sys.executable).parent


def cli_missing() -> str | None:
    """Why the deployment cannot run here (a Flower command missing), or None."""
    for name in ("flower-superlink", "flower-supernode", "flwr"):
        if not (BIN / name).exists() and shutil.which(name) is None:
            return f"the Flower CLI ({name}) is not installed: pip install 'alignsolve[flower]'"
    return None


def _command(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it (PEM files in ``folder``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("alignsolve test CA"))
        .issuer_name(name("alignsolve test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def _raise_on_term(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past the command's parentheses


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from ``/proc``; empty where there is none)."""
    parents = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit() and (ppid := _parent(int(entry.name))) is not None:
            parents[int(entry.name)] = ppid
    found, frontier = [], [pid]
    while frontier:
        here = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == here]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Deployment:
    """SuperLink + SuperNodes + the example app, in ``folder``; use as a context manager (stops everything).

    Parameters
    ----------
    folder : Path
        Working folder: Flower home, app copy, logs, certificates, the run's output.
    fedconfig : dict
        The run's :class:`fedloop.FedConfig` fields (``n_clients`` SuperNodes are started).
    tls : bool
        Certificates generated here; otherwise ``--insecure``.
    profile : str
        Every SuperNode's ``profile`` node config ("measure" or "table").
    app : Path
        The Flower app to copy and configure (default: the example app of a source checkout).
    """

    def __init__(
        self, folder: str | Path, fedconfig: dict, *, tls: bool = False, profile: str = "measure", app: Path = APP
    ) -> None:
        self.app = Path(app)
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fedconfig = fedconfig
        self.tls = tls
        self.profile = profile
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.home = self.folder / "flwr-home"
        self.out = self.folder / "out"
        # The SuperLink and SuperNodes start Flower's other commands (flower-superexec...) by name: on the PATH.
        path = os.pathsep.join([str(BIN), os.environ.get("PATH", "")])
        self.env = dict(os.environ, FLWR_HOME=str(self.home), FLWR_TELEMETRY_ENABLED="0", PATH=path)
        #: Every PID stopped so far, the started processes' descendants included.
        self.stopped: list[int] = []
        self.certs = make_certificates(self.folder / "certs") if tls else None

    # -- processes -------------------------------------------------------------------------
    def _start(self, key: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.folder / f"{key}.log", "w")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder, start_new_session=True
        )
        self.procs[key] = proc
        return proc

    def _security(self, server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        if server:
            c = self.certs
            return ["--ssl-ca-certfile", str(c["ca"]), "--ssl-certfile", str(c["cert"]), "--ssl-keyfile", str(c["key"])]
        return ["--root-certificates", str(self.certs["ca"])]

    def start_superlink(self) -> None:
        proc = self._start("superlink", self.superlink_argv())
        deadline = time.monotonic() + 60.0
        while True:  # ready when its port accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the SuperLink did not start: {self.tail()}") from None
                time.sleep(0.2)

    def superlink_argv(self) -> list[str]:
        """``flower-superlink`` with TLS (or ``--insecure``) on ``127.0.0.1:port``."""
        return [_command("flower-superlink"), *self._security(True), "--host", "127.0.0.1", "--port", str(self.port)]

    def supernode_argv(self, i: int, runtime_port: int) -> list[str]:
        """``flower-supernode`` of fedloop client ``i``: its partition, the federation's size, its profile source."""
        n = self.fedconfig["n_clients"]
        node_config = f'partition-id={i} num-partitions={n} profile="{self.profile}"'
        return [
            _command("flower-supernode"),
            *self._security(False),
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--port",
            str(runtime_port),
            "--node-config",
            node_config,
        ]

    def start_supernode(self, i: int) -> None:
        self._start(f"supernode{i}", self.supernode_argv(i, free_port()))

    def stop(self, key: str) -> None:
        """Stop process ``key`` and every process it spawned, by their PIDs (TERM, then KILL after 10 s)."""
        proc = self.procs.get(key)
        if proc is None:
            return
        family = [*descendants(proc.pid), proc.pid]
        self.stopped += family
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in family:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
            deadline = time.monotonic() + 10
            while any(alive(pid) for pid in family) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not any(alive(pid) for pid in family):
                return

    def stop_all(self) -> None:
        for key in list(self.procs):
            self.stop(key)

    def __enter__(self) -> Deployment:
        # A harness stopped by SIGTERM (a timeout) must still stop what it started: the signal becomes an
        # exception, so that __exit__ runs. (SIGKILL cannot be caught: its processes then outlive it.)
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _raise_on_term)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            if self._previous is not None:
                signal.signal(signal.SIGTERM, self._previous)

    # -- the app -----------------------------------------------------------------------------
    def prepare_app(self, **run_config: object) -> Path:
        """A copy of the example app whose run config holds ``fedconfig`` and ``run_config``; the connection ``deploy``.

        ``run_config`` sets keys of the app's ``[tool.flwr.app.config]`` (``round_timeout`` for
        ``round-timeout``...), written as TOML values.
        """
        if not (self.app / "pyproject.toml").is_file():
            raise FileNotFoundError(f"app: no Flower app at {self.app} (the example app ships with a source checkout)")
        app = self.folder / "app"
        shutil.copytree(self.app, app, ignore=shutil.ignore_patterns("runs"), dirs_exist_ok=True)
        text = (app / "pyproject.toml").read_text()
        config = json.dumps(self.fedconfig).replace("'", "")
        text = re.sub(r"(?m)^fedloop-config = .*$", f"fedloop-config = '{config}'", text)
        text = re.sub(r"(?m)^out-dir = .*$", f'out-dir = "{self.out}"', text)
        for key, value in run_config.items():
            name = key.replace("_", "-")
            toml = str(value).lower() if isinstance(value, bool) else repr(value)
            text, found = re.subn(rf"(?m)^{name} = .*$", f"{name} = {toml}", text)
            if not found:
                raise KeyError(f"{name}: not a key of the example app's run config")
        (app / "pyproject.toml").write_text(text)
        self.home.mkdir(parents=True, exist_ok=True)
        security = "insecure = true" if self.certs is None else f'root-certificates = "{self.certs["ca"]}"'
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{self.port}"\n{security}\n'
        )
        return app

    def submit(self, app: Path, timeout: float = 60.0) -> str:
        """``flwr run . deploy`` from the app folder; returns its output (raises when it fails)."""
        out = subprocess.run(
            [_command("flwr"), "run", ".", "deploy"],
            cwd=app,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"flwr run failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
        return out.stdout

    def wait_for_log(self, key: str, text: str, count: int = 1, timeout: float = 120.0) -> None:
        """Block until process ``key``'s log holds ``text`` ``count`` times."""
        deadline = time.monotonic() + timeout
        path = self.folder / f"{key}.log"
        while path.read_text(errors="replace").count(text) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{key}: {text!r} not seen {count} times in {timeout:.0f} s: {self.tail()}")
            time.sleep(0.2)

    def wait_for_results(self, timeout: float) -> dict:
        """The run's ``clients.json``, history and ``timings.json``, once the ServerApp has written them."""
        deadline = time.monotonic() + timeout
        done = self.out / "clients.json"
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no results in {timeout:.0f} s; logs in {self.folder}: {self.tail()}")
            if self.procs["superlink"].poll() is not None:
                raise RuntimeError(f"the SuperLink exited: {self.tail()}")
            time.sleep(0.5)
        time.sleep(0.2)  # history.json is written before clients.json
        timings = self.out / "timings.json"
        return {
            "clients": json.loads(done.read_text()),
            "history": json.loads((self.out / "history.json").read_text()),
            "timings": json.loads(timings.read_text()) if timings.exists() else {},
        }

    def tail(self, n: int = 1500) -> str:
        return " | ".join(f"{p.name}: {p.read_text(errors='replace')[-n:]}" for p in sorted(self.folder.glob("*.log")))
