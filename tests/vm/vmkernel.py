"""A Debian 12 kernel under qemu, its root this host's filesystem shared read-only over 9p.

For the tests a host kernel cannot run (this one may lack 802.1Q): the guest boots
Debian's ``linux-image-amd64`` kernel with a tiny initramfs (busybox and the
modules the tests need, loaded in dependency order), mounts the host's ``/`` read
only, puts tmpfs on ``/tmp``, ``/run`` and ``/var/tmp``, and runs
``tests/vm/guest-init.sh``: pytest with the arguments the host wrote into a shared
writable directory, whose output and exit code it writes back there. The guest
has no network device; nothing it does leaves it.

Prepared once into ``ASTARA_VM_CACHE`` (default ``/var/tmp/astara-vm``) by
``prepare()`` (``scripts/vm-kernel install``): ``apt-get download`` of the kernel
and ``busybox-static`` (``dpkg -x``, never installed), then the initramfs.
qemu itself comes from the host: ``apt-get install qemu-system-x86``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("ASTARA_VM_CACHE", "/var/tmp/astara-vm"))
PROJECT = Path(__file__).resolve().parents[2]
GUEST_INIT = PROJECT / "tests" / "vm" / "guest-init.sh"
KERNEL_META = "linux-image-amd64"
QEMU = "qemu-system-x86_64"
# what the guest needs: its root over virtio-9p, and the fabric's devices
MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "8021q",
    "bridge",
    "veth",
    "vxlan",
    "crc32c_generic",  # libcrc32c's soft dependency (nf_tables needs crc32c)
    "nf_tables",
    "nft_ct",
    "nft_nat",
    "nft_chain_nat",
    "nft_reject_inet",
    "nft_fib_inet",
)

INITRAMFS_INIT = """#!/bin/busybox sh
# astara-vm initramfs: load modules, mount the host's / (9p, read only), switch root.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for ko in $(/bin/busybox cat /modules.load); do
    /bin/busybox insmod "/modules/$ko" || echo "astara-vm: insmod $ko failed"
done
if ! /bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 \\
        astara-root /newroot; then
    echo "astara-vm: cannot mount the host root over 9p"
    echo o > /proc/sysrq-trigger
fi
/bin/busybox umount /proc /sys /dev
exec /bin/busybox switch_root /newroot "$(/bin/busybox cat /guest-init)"
"""


class VmError(Exception):
    """The guest cannot be prepared or run: the message says what is missing."""


@dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    release: str


@dataclass(frozen=True)
class Outcome:
    code: int | None  # pytest's exit code; None when the guest never wrote one
    output: str  # pytest's output
    console: str  # the guest's serial console
    seconds: float


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(
            argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VmError(f"{' '.join(argv)}: {exc}") from exc
    if done.returncode != 0:
        raise VmError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _kernel_package() -> str:
    """The versioned image package ``linux-image-amd64`` depends on (e.g. 6.1.0-57-amd64)."""
    out = _run(["apt-cache", "depends", KERNEL_META])
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", out)
    if not found:
        raise VmError(f"apt-cache depends {KERNEL_META}: no kernel image package in {out!r}")
    return found[0]


def _extract(package: str, into: Path) -> None:
    """``apt-get download`` + ``dpkg -x`` into ``into`` (done once: a marker says so)."""
    if (into / ".astara-extracted").exists():
        return
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="astara-vm-deb-", dir=CACHE) as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user writes here
        _run(["apt-get", "download", package], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise VmError(f"apt-get download {package} gave {[d.name for d in debs]}")
        _run(["dpkg", "-x", str(debs[0]), str(into)])
    (into / ".astara-extracted").touch()


def _modinfo_depends(ko: Path) -> list[str]:
    match = re.search(rb"\0depends=([^\0]*)\0", b"\0" + ko.read_bytes())
    return [d for d in (match.group(1).decode().split(",") if match else []) if d]


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """``wanted`` and what they depend on, dependencies first (built-in ones left out)."""
    files = {p.name.removesuffix(".ko").replace("-", "_"): p for p in moddir.rglob("*.ko")}
    builtin_file = moddir / "modules.builtin"
    builtin = {
        Path(line).name.removesuffix(".ko").replace("-", "_")
        for line in builtin_file.read_text().split()
    }
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key in builtin:
            return
        if key not in files:
            raise VmError(f"kernel module {name} is in neither {moddir} nor modules.builtin")
        for dep in _modinfo_depends(files[key]):
            visit(dep)
        order.append(files[key])

    for name in wanted:
        visit(name)
    return order


def _newc(root: Path) -> bytes:
    """The files and directories under ``root`` as a newc cpio archive, owned by root."""
    out = io.BytesIO()

    def entry(ino: int, name: str, mode: int, data: bytes) -> None:
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out.write(b"070701" + b"".join(b"%08x" % f for f in fields))
        out.write(name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    paths = sorted(root.rglob("*"))
    for ino, path in enumerate(paths, start=1):
        mode = path.stat().st_mode
        data = path.read_bytes() if stat.S_ISREG(mode) else b""
        entry(ino, str(path.relative_to(root)), mode, data)
    entry(0, "TRAILER!!!", 0, b"")
    return out.getvalue()


def _build_initrd(kroot: Path, busybox: Path, release: str, target: Path) -> None:
    """A gzipped newc cpio of busybox, the modules and /init."""
    order = _module_order(kroot / "lib" / "modules" / release, MODULES)
    with tempfile.TemporaryDirectory(prefix="astara-vm-initrd-", dir=CACHE) as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "modules").mkdir()
        shutil.copy(busybox, root / "bin" / "busybox")
        for ko in order:
            shutil.copy(ko, root / "modules" / ko.name)
        (root / "modules.load").write_text("".join(f"{ko.name}\n" for ko in order))
        (root / "guest-init").write_text(str(GUEST_INIT))
        (root / "init").write_text(INITRAMFS_INIT)
        for path in (root / "init", root / "bin" / "busybox"):
            path.chmod(0o755)
        cpio = _newc(root)
    partial = target.with_suffix(".partial")
    partial.write_bytes(gzip.compress(cpio, compresslevel=6))
    partial.replace(target)


def prepare() -> Guest:
    """The kernel and initramfs, fetched and built once (idempotent); VmError says what failed."""
    if shutil.which(QEMU) is None:
        raise VmError(
            f"{QEMU} is missing: apt-get install -y --no-install-recommends qemu-system-x86"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    package_file = CACHE / "kernel-package"
    package = package_file.read_text().strip() if package_file.exists() else _kernel_package()
    kroot = CACHE / package
    _extract(package, kroot)
    package_file.write_text(package + "\n")
    bbroot = CACHE / "busybox-static"
    _extract("busybox-static", bbroot)
    busybox = bbroot / "bin" / "busybox"
    kernels = sorted((kroot / "boot").glob("vmlinuz-*"))
    if not kernels or not busybox.exists():
        raise VmError(f"{kroot}/boot has no vmlinuz-*, or {busybox} is missing")
    kernel = kernels[-1]
    release = kernel.name.removeprefix("vmlinuz-")
    config = (kroot / "boot" / f"config-{release}").read_text()
    for option in ("NET_9P_VIRTIO", "9P_FS", "VLAN_8021Q", "BRIDGE", "VETH", "VXLAN"):
        if not re.search(rf"^CONFIG_{option}=[ym]$", config, re.M):
            raise VmError(f"kernel {release} lacks CONFIG_{option}")
    initrd = CACHE / f"initrd-{release}.gz"
    stamp = f"{release} {' '.join(MODULES)} {GUEST_INIT}\n{INITRAMFS_INIT}"
    stamp_file = CACHE / f"initrd-{release}.stamp"
    if not initrd.exists() or not stamp_file.exists() or stamp_file.read_text() != stamp:
        _build_initrd(kroot, busybox, release, initrd)
        stamp_file.write_text(stamp)
    return Guest(kernel, initrd, release)


def _accel() -> list[str]:
    """TCG (software emulation) unless ASTARA_VM_ACCEL says otherwise (e.g. ``kvm``): a
    nested /dev/kvm can open fine and then hang the guest, as on Firecracker hosts."""
    return ["-accel", os.environ.get("ASTARA_VM_ACCEL", "tcg")]


def run(
    pytest_args: list[str], shared: Path, *, timeout: float = 900, memory: str = "1536M"
) -> Outcome:
    """Boot the guest, run ``pytest pytest_args`` in it, power off; ``shared`` is scratch
    (the caller's, empty): the guest writes its results there."""
    guest = prepare()
    (shared / "args").write_text("\n".join(pytest_args) + "\n")
    console = shared / "console.log"
    argv = [
        QEMU,
        *_accel(),
        "-machine", "q35",
        "-cpu", "max",
        "-smp", "2",
        "-m", memory,
        "-nic", "none",
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",
        "-serial", f"file:{console}",
        "-kernel", str(guest.kernel),
        "-initrd", str(guest.initrd),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        "-virtfs", "local,path=/,mount_tag=astara-root,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={shared},mount_tag=astara-out,security_model=none",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        qemu_out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise VmError(
            f"the guest did not power off within {timeout:.0f}s; console:\n{_tail(console)}"
        ) from None
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise VmError(f"{QEMU} exited {proc.returncode}: {qemu_out.decode(errors='replace')}")
    code_file = shared / "exit-code"
    code = int(code_file.read_text()) if code_file.exists() else None
    output_file = shared / "pytest.out"
    output = output_file.read_text(errors="replace") if output_file.exists() else ""
    return Outcome(code, output, _tail(console, 20000), seconds)


def _tail(path: Path, size: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes()[-size:].decode(errors="replace")
    return ""


def main(argv: list[str]) -> int:
    usage = "usage: scripts/vm-kernel install | run [pytest args...]"
    if not argv or argv[0] not in ("install", "run"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "install":
            guest = prepare()
            print(f"kernel {guest.release}: {guest.kernel}\ninitramfs: {guest.initrd}")
            return 0
        shared = Path(tempfile.mkdtemp(prefix="astara-vm-run-"))
        try:
            outcome = run(argv[1:] or ["tests/netns/test_fabric.py", "-k", "vlan"], shared)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
    except VmError as exc:
        print(f"vm-kernel: {exc}", file=sys.stderr)
        return 1
    print(outcome.output, end="")
    print(f"[guest: pytest exit {outcome.code}, {outcome.seconds:.0f}s]")
    if outcome.code is None:
        print(outcome.console, file=sys.stderr)
        return 1
    return outcome.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
