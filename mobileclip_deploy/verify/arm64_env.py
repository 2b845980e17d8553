"""The arm64 guest environment for `verify --arch arm64`: a Debian sysroot, aarch64 wheels and fake CPU identities.

Prepared once into a cache folder, step by step (each step is recorded in `state.json` only when it finished),
so an interrupted preparation resumes where it stopped. Every downloaded .deb and wheel has its sha256 recorded
and is checked again before the environment is reused. qemu-user runs the guest; no chroot, binfmt or root
filesystem changes on the host are needed (see ../shared/reference/arm64-emulation.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mobileclip_deploy.atomic import write_text
from mobileclip_deploy.cache import cache_dir
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.hashing import sha256_path

SUITE = "bookworm"  # Debian 12: Python 3.11, the host's minor version
GUEST_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1", "zlib1g", "libffi8",
                  "libexpat1")
GUEST_PYTHON = "usr/bin/python3.11"
# pip does not widen --platform tags: every manylinux level an aarch64 wheel (or NVIDIA dependency) uses is listed.
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{i}_aarch64" for i in range(17, 29))]
# executorch.runtime imports executorch.exir, whose import chain needs these (executorch itself goes in --no-deps).
EXECUTORCH_EXTRA = ("ruamel.yaml", "pyyaml", "tabulate")
STATE_VERSION = 1


@dataclass(frozen=True)
class CpuModel:
    """A phone-like CPU: the qemu -cpu value and the identity (MIDR, HWCAP names) its fake /proc/cpuinfo shows."""

    name: str
    qemu: str
    part: int  # MIDR part number (ARM implementer 0x41)
    variant: int
    revision: int
    features: str  # /proc/cpuinfo "Features": the HWCAP names qemu gives this -cpu
    kernels: str  # what XNNPACK / MLAS can pick on it
    phones: str

    @property
    def midr(self) -> str:
        return f"0x{(0x41 << 24) | (self.variant << 20) | (0xF << 16) | (self.part << 4) | self.revision:016x}"


_BASE = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
CPU_MODELS: dict[str, CpuModel] = {m.name: m for m in (
    CpuModel("cortex-a53", "cortex-a53", 0xD03, 0, 4, _BASE, "plain NEON (no dot product)",
             "low-end Android (Galaxy A-series, Android Go), little cores of older phones"),
    CpuModel("cortex-a76", "cortex-a76", 0xD0B, 4, 1,
             _BASE + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp ssbs", "NEON + int8 dot product (sdot)",
             "mid-range and 2019-2021 flagship big cores (Snapdragon 855-888 class)"),
    # qemu 7.2's `max` has SME, and its SME emulation gives wrong int8 results: SME is always switched off.
    CpuModel("max-i8mm", "max,sme=off", 0xD47, 2, 0,
             _BASE + " atomics fphp asimdhp asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve "
             "asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 "
             "svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti", "int8 matrix multiply (smmla), SVE2, bf16",
             "Armv9 big cores (Cortex-A710/X2 and later: Pixel 7+, Galaxy S22+)"),
)}
DEFAULT_CPUS = ("cortex-a53", "cortex-a76")

HOST_TOOLS = {"qemu-aarch64-static": "qemu-user-static", "debootstrap": "debootstrap", "dpkg": "dpkg"}


def default_cache() -> Path:
    """$MOBILECLIP_ARM64_CACHE (the ~5 GB environment can live apart from the other caches), else the cache folder's
    arm64/."""
    if os.environ.get("MOBILECLIP_ARM64_CACHE"):
        return Path(os.environ["MOBILECLIP_ARM64_CACHE"])
    return cache_dir("arm64")


def parse_cpus(value: str | None) -> list[CpuModel]:
    names = [n.strip() for n in (value or ",".join(DEFAULT_CPUS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in CPU_MODELS]
    if unknown or not names:
        raise UserError(f"unknown CPU model {', '.join(unknown) or '(none)'}; choose from {', '.join(CPU_MODELS)} "
                        f"(default {','.join(DEFAULT_CPUS)})")
    return [CPU_MODELS[n] for n in dict.fromkeys(names)]


def check_tools() -> dict[str, str]:
    """Paths of the host tools, or one error naming the Debian packages to install."""
    found = {tool: shutil.which(tool) for tool in HOST_TOOLS}
    missing = sorted({HOST_TOOLS[t] for t, p in found.items() if p is None})
    if missing:
        tools = ", ".join(t for t, p in found.items() if p is None)
        raise UserError(f"arm64 verification needs {tools} on the host: install the Debian package(s) "
                        f"{' '.join(missing)} (apt-get install -y {' '.join(missing)})")
    return {t: str(p) for t, p in found.items()}


def debian_mirror() -> str:
    """$MOBILECLIP_DEBIAN_MIRROR, else the first Debian mirror apt already uses here, else deb.debian.org."""
    if os.environ.get("MOBILECLIP_DEBIAN_MIRROR"):
        return os.environ["MOBILECLIP_DEBIAN_MIRROR"]
    for source in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if not source.is_file():
            continue
        text = source.read_text(errors="replace")
        for url in re.findall(r"(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(https?://\S+)", text):
            if "security" not in url and "debian" in url:
                return url
    return "http://deb.debian.org/debian"


def host_versions() -> dict[str, str]:
    """The runtime versions the host exported and checked with; the guest gets the same ones."""
    from mobileclip_deploy.exporters.manifest import package_versions

    names = ["onnxruntime", "numpy", "executorch", "torch", "ai-edge-litert"]
    return {name: v.split("+")[0] for name, v in package_versions(names).items()}


def litert_requirements(versions: dict[str, str]) -> list[str]:
    """The light LiteRT guest: the aarch64 ai_edge_litert wheel (14 MB) and its small pure-Python dependencies
    (flatbuffers, protobuf, ml_dtypes, tqdm, typing-extensions, backports.strenum); no torch."""
    if "ai-edge-litert" not in versions:
        raise UserError('the host has no ai-edge-litert: pip install -c constraints.txt -e ".[litert-runtime]"')
    return [f"ai-edge-litert=={versions['ai-edge-litert']}", f"numpy=={versions['numpy']}"]


class Arm64Env:
    """One cache folder holding the sysroot, wheels and per-CPU sysroots; use under `lock()`."""

    def __init__(self, cache: Path, report: Callable[[str], None] = lambda message: None) -> None:
        self.cache = Path(cache)
        self.report = report
        self.root = self.cache / "root"
        self.state_path = self.cache / "state.json"

    # ---- state -----------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        if self.state_path.is_file():
            try:
                state = json.loads(self.state_path.read_text())
                if state.get("version") == STATE_VERSION:
                    return state
            except json.JSONDecodeError:
                pass
        return {"version": STATE_VERSION, "steps": {}}

    def _record(self, step: str, facts: dict) -> None:
        state = self._state()
        state["steps"][step] = facts
        write_text(self.state_path, json.dumps(state, indent=1, sort_keys=True) + "\n", replace=True)

    @staticmethod
    def _verify(folder: Path, hashes: dict[str, str], what: str) -> None:
        for name, digest in hashes.items():
            path = folder / name
            if not path.is_file() or sha256_path(path) != digest:
                raise UserError(f"the arm64 environment's {what} {path} is missing or changed since it was "
                                f"downloaded (sha256 mismatch); delete {path.parent.parent} to prepare it again")

    def _run(self, cmd: list[str], what: str, **kwargs) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
        if proc.returncode != 0:
            raise UserError(f"preparing the arm64 environment failed while {what} (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-1500:]}")

    # ---- steps -----------------------------------------------------------------------------------------------
    def prepare(self, cpus: list[CpuModel], executorch: bool, litert: bool = False) -> dict[str, str]:
        """Make (or check and reuse) everything the guest needs; returns the guest runtime versions."""
        check_tools()
        self.cache.mkdir(parents=True, exist_ok=True)
        self._sysroot()
        versions = host_versions()
        wanted = {"onnxruntime": [f"onnxruntime=={versions['onnxruntime']}", f"numpy=={versions['numpy']}"]}
        if executorch:
            if "executorch" not in versions:
                raise UserError("the host has no executorch: install mobileclip-deploy[export]")
            wanted["executorch"] = [f"torch=={versions['torch']}", *EXECUTORCH_EXTRA]
        if litert:
            wanted["litert"] = litert_requirements(versions)
        for group, requirements in wanted.items():
            self._wheels(group, requirements, no_deps=[f"executorch=={versions['executorch']}"]
                         if group == "executorch" else [])
        for cpu in cpus:
            self._cpu_sysroot(cpu)
        return versions

    def _sysroot(self) -> None:
        step = self._state()["steps"].get("sysroot")
        archives = self.root / "var/cache/apt/archives"
        if step:
            self._verify(archives, step["debs"], ".deb")
            if not (self.root / GUEST_PYTHON).exists():
                raise UserError(f"{self.root / GUEST_PYTHON} is missing; delete {self.cache} to prepare it again")
            return
        partial = self.cache / "root.partial"
        if partial.exists():  # a run that stopped mid-download: debootstrap cannot resume into a half-made root
            shutil.rmtree(partial)
        mirror = debian_mirror()
        self.report(f"arm64 sysroot: downloading Debian {SUITE} arm64 packages from {mirror} (about 40 MB)")
        self._run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                   f"--include={','.join(GUEST_PACKAGES)}", SUITE, str(partial), mirror], "running debootstrap")
        debs = sorted((partial / "var/cache/apt/archives").glob("*.deb"))
        self.report(f"arm64 sysroot: unpacking {len(debs)} packages")
        hashes = {}
        for deb in debs:
            hashes[deb.name] = sha256_path(deb)
            self._run(["dpkg", "-x", str(deb), str(partial)], f"unpacking {deb.name}")
        if not (partial / GUEST_PYTHON).exists():
            raise UserError(f"the arm64 sysroot has no {GUEST_PYTHON} after unpacking; check the mirror {mirror}")
        if self.root.exists():
            shutil.rmtree(self.root)
        partial.rename(self.root)
        self._record("sysroot", {"suite": SUITE, "mirror": mirror, "debs": hashes})

    def site(self, group: str) -> Path:
        return self.cache / f"site-{group}"

    def _wheels(self, group: str, requirements: list[str], no_deps: list[str]) -> None:
        key = f"wheels-{group}"
        step = self._state()["steps"].get(key)
        wheels, site = self.cache / f"wheels-{group}", self.site(group)
        if step and step["requirements"] == requirements + no_deps:
            self._verify(wheels, step["wheels"], "wheel")
            if site.is_dir():
                return
        platform = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                    *(arg for p in PLATFORMS for arg in ("--platform", p))]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        size = {"executorch": "about 4 GB: torch's aarch64 wheel is the CUDA build",
                "litert": "about 30 MB, no torch"}.get(group, "about 40 MB")
        self.report(f"arm64 wheels ({group}): downloading {' '.join(requirements + no_deps)} ({size})")
        self._run([*pip, "download", "-q", "-d", str(wheels), *platform, *requirements], "downloading wheels")
        if no_deps:
            self._run([*pip, "download", "-q", "--no-deps", "-d", str(wheels), *platform, *no_deps],
                      "downloading wheels")
        hashes = {w.name: sha256_path(w) for w in sorted(wheels.glob("*.whl"))}
        self.report(f"arm64 wheels ({group}): installing {len(hashes)} wheels")
        partial = self.cache / f"site-{group}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self._run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(partial), *platform,
                   *(str(wheels / w) for w in hashes)], "installing wheels")
        shutil.rmtree(partial / "triton", ignore_errors=True)  # a GPU compiler; the CPU runtime never loads it
        shutil.rmtree(site, ignore_errors=True)
        partial.rename(site)
        self._record(key, {"requirements": requirements + no_deps, "wheels": hashes})

    def cpu_root(self, cpu: CpuModel) -> Path:
        return self.cache / "cpu" / cpu.name

    def _cpu_sysroot(self, cpu: CpuModel) -> None:
        """A symlink farm over the sysroot with this CPU's own /proc/cpuinfo and MIDR registers.

        qemu 7.2 shows the guest the host's x86 /proc/cpuinfo, on which onnxruntime crashes at import; qemu's
        -L prefix makes the guest read these files instead.
        """
        folder = self.cpu_root(cpu)
        folder.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            link = folder / entry.name
            if entry.name not in ("proc", "sys") and not link.is_symlink():
                link.symlink_to(entry)
        count = max(1, min(os.cpu_count() or 1, 8))
        blocks = [f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {cpu.features}\nCPU implementer\t: 0x41\n"
                  f"CPU architecture: 8\nCPU variant\t: 0x{cpu.variant:x}\nCPU part\t: 0x{cpu.part:03x}\n"
                  f"CPU revision\t: {cpu.revision}\n" for i in range(count)]
        write_text(folder / "proc/cpuinfo", "\n".join(blocks) + "\n", replace=True)
        cpu_dir = folder / "sys/devices/system/cpu"
        for name in ("possible", "present", "online"):
            write_text(cpu_dir / name, f"0-{count - 1}\n" if count > 1 else "0\n", replace=True)
        for i in range(count):
            write_text(cpu_dir / f"cpu{i}/regs/identification/midr_el1", cpu.midr + "\n", replace=True)

    def command(self, cpu: CpuModel, groups: list[str], script: Path, args: list[str]) -> list[str]:
        """The qemu command line that runs `script` with the guest Python on this CPU model."""
        path = ":".join(str(self.site(g)) for g in groups)
        return ["qemu-aarch64-static", "-cpu", cpu.qemu, "-L", str(self.cpu_root(cpu)), "-E", f"PYTHONPATH={path}",
                "-E", "PYTHONNOUSERSITE=1", "-E", "PYTHONDONTWRITEBYTECODE=1", "-E", "OMP_NUM_THREADS=1",
                str(self.root / GUEST_PYTHON), str(script), *args]
