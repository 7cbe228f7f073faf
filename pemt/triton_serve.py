"""Triton on any machine: the ``tritonserver`` binary inside the nvidia-pytriton wheel.

``pemt triton serve REPO`` (no Docker, no GPU) and the tests use this module. The
nvidia-pytriton wheel ships Triton (2.51) with the Python backend only, CPU friendly; export
with ``--triton-backend python`` for it (NVIDIA's container runs the onnxruntime/TensorRT
backends instead). This module starts that binary on a model repository, on free (or given)
ports, and stops it cleanly::

    from pemt.triton_serve import TritonServer, triton_available

    with TritonServer("model_repository", models=["pemt"]) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
        ...
        client.close()          # close clients before the server stops, or shutdown waits 30 s


How the Python backend stub finds our packages (done the way pytriton does it, see
``pytriton/triton.py::_prepare_triton_inference_server`` and
``pytriton/server/triton_server.py::_get_env``):

* the wheel's ``backends/python`` has no stub; pytriton copies
  ``python_backend_stubs/<major.minor>/triton_python_backend_stub`` next to
  ``libtriton_python.so``. We build such a backend directory in a temp dir (symlinks + stub).
* the stub embeds libpython; ``LD_LIBRARY_PATH`` must start with this interpreter's ``LIBDIR``
  or it loads another libpython 3.11 and model load fails with
  ``'_thread.RLock' object has no attribute '_recursion_count'``. The wheel's own libs
  (``nvidia_pytriton.libs``) come next.
* the embedded interpreter locates its prefix through ``PATH``: putting this venv's ``bin`` first
  makes it read ``pyvenv.cfg`` and use the venv's site-packages, so ``import numpy,
  onnxruntime`` work inside ``model.py``.
* each server gets its own shared-memory prefix (``--backend-config=python,shm-region-prefix-name``)
  so concurrent servers (parallel test runs) do not collide in ``/dev/shm``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TritonDist",
    "TritonServer",
    "TritonStartError",
    "find_triton",
    "free_port",
    "register",
    "triton_available",
]


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonStartError(RuntimeError):
    """The server did not become ready; the message carries the tail of its log."""


@dataclass(frozen=True)
class TritonDist:
    """Paths inside the installed nvidia-pytriton wheel."""

    binary: Path  # pytriton/tritonserver/bin/tritonserver
    python_backend: Path  # pytriton/tritonserver/backends/python (no stub inside)
    stub: Path  # pytriton/tritonserver/python_backend_stubs/<X.Y>/triton_python_backend_stub
    libs: Path  # nvidia_pytriton.libs (bundled shared libraries)


def find_triton() -> TritonDist | None:
    """Locate the tritonserver binary of the nvidia-pytriton wheel, or None if not installed."""
    try:
        import pytriton  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDist(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs=root.parent.parent / "nvidia_pytriton.libs",
    )
    if not (dist.binary.is_file() and dist.stub.is_file() and dist.python_backend.is_dir()):
        return None
    return dist


def triton_available() -> bool:
    return find_triton() is not None


class TritonServer:
    """One ``tritonserver`` process serving ``model_repository`` on free localhost ports.

    ``models``: load exactly these (``--model-control-mode=explicit --load-model=...``);
    None loads every model in the repository (``--model-control-mode=none``).
    ``http_url``/``grpc_url`` are ``host:port`` strings as tritonclient expects them.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        models: Sequence[str] | None = None,
        startup_timeout: float = 90.0,
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        dist = find_triton()
        if dist is None:
            raise TritonStartError(
                "tritonserver not found: install nvidia-pytriton (pip install -e '.[triton]')"
            )
        self.dist = dist
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models) if models is not None else None
        self.startup_timeout = startup_timeout
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args)
        self.host = host
        self.ports = ports  # (http, grpc, metrics); None: free ports
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None

    # --- urls ---------------------------------------------------------------------------
    @property
    def _reach(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "127.0.0.1") else self.host

    @property
    def http_url(self) -> str:
        return f"{self._reach}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._reach}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._reach}:{self.metrics_port}/metrics"

    # --- lifecycle ----------------------------------------------------------------------
    def _backend_dir(self, root: Path) -> Path:
        """``backends/python`` = the wheel's backend + the stub for this interpreter."""
        backends = root / "backends"
        py = backends / "python"
        py.mkdir(parents=True)
        for item in self.dist.python_backend.iterdir():
            if item.name != "__pycache__":
                (py / item.name).symlink_to(item)
        shutil.copy2(self.dist.stub, py / "triton_python_backend_stub")
        return backends

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        ld = [p for p in (libdir, str(self.dist.libs), env.get("LD_LIBRARY_PATH", "")) if p]
        env["LD_LIBRARY_PATH"] = ":".join(ld)
        env["PATH"] = f"{Path(sys.exec_prefix) / 'bin'}:{env.get('PATH', '')}"
        return env

    def command(self, backend_dir: Path) -> list[str]:
        cmd = [
            str(self.dist.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--backend-config=python,shm-region-prefix-name=pemt{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.models is None:
            cmd.append("--model-control-mode=none")
        else:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.models]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        if self._proc is not None:
            return self
        self._workdir = tempfile.TemporaryDirectory(prefix="pemt-triton-")
        root = Path(self._workdir.name)
        backend_dir = self._backend_dir(root)
        self.http_port, self.grpc_port, self.metrics_port = self.ports or (
            free_port(),
            free_port(),
            free_port(),
        )
        self._log_path = root / "tritonserver.log"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(backend_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=root,
                start_new_session=True,  # our own process group: stop() kills the stubs too
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise TritonStartError(
                    f"tritonserver exited with code {self._proc.returncode}:\n{self.logs(60)}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise TritonStartError(
            f"tritonserver not ready after {self.startup_timeout:.0f} s:\n{self.logs(60)}"
        )

    def is_ready(self) -> bool:
        """GET /v2/health/ready (200 once every requested model is loaded)."""
        try:
            with urllib.request.urlopen(
                f"http://{self.http_url}/v2/health/ready", timeout=1.0
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def logs(self, last: int | None = None) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        lines = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-last:] if last else lines)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the process group. Close your clients first."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            code = proc.returncode
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(
    model_repository: str | os.PathLike[str], models: Sequence[str] | None = None, **kw: object
) -> Iterator[TritonServer]:
    """Context manager form, e.g. for a module-scoped pytest fixture (``yield from``)."""
    server = TritonServer(model_repository, models=models, **kw)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ `pemt triton serve`


def register(sub: Any) -> None:
    p = sub.add_parser(
        "triton", help="run Triton from the nvidia-pytriton wheel (no Docker, no GPU)"
    )
    tsub = p.add_subparsers(dest="triton_command", required=True, metavar="ACTION")
    s = tsub.add_parser(
        "serve",
        help="serve a model repository until Ctrl-C",
        description="Start the Triton server bundled in the nvidia-pytriton wheel on a model "
        "repository exported with `--triton-backend python`, print its URLs, stop on Ctrl-C.",
    )
    s.add_argument("repo", type=Path, help="model repository (export/build_engine.py --out)")
    s.add_argument("--models", nargs="*", default=None, help="load only these (default: all)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--startup-timeout", type=float, default=120.0)
    s.set_defaults(func=_serve)


def _serve(args: Any) -> int:
    if not (args.repo / "").is_dir():
        raise ValueError(f"{args.repo} is not a directory; export a model repository first")
    server = TritonServer(
        args.repo,
        models=args.models,
        startup_timeout=args.startup_timeout,
        host=args.host,
        ports=(args.http_port, args.grpc_port, args.metrics_port),
    )
    try:
        server.start()
    except TritonStartError as e:
        raise ValueError(str(e)) from None
    print(f"Triton is serving {server.model_repository}", flush=True)
    print(f"  gRPC     {server.grpc_url}   (PEMT_BACKEND=triton PEMT_TRITON_URL={server.grpc_url})")
    print(f"  HTTP     http://{server.http_url}/v2/health/ready")
    print(f"  metrics  {server.metrics_url}")
    print("Ctrl-C stops it.", flush=True)
    try:
        while server._proc is not None and server._proc.poll() is None:
            time.sleep(0.5)
        print(f"tritonserver exited:\n{server.logs(20)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Triton ...", flush=True)
        return 0
    finally:
        server.stop()
