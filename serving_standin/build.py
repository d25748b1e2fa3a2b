"""Build the stand-in image without a registry: Debian rootfs + python3 + tensorflow-cpu + our server.

Three cached layers of work under var/serving-image/, each keyed by what it is made from:
the debootstrap rootfs (suite, packages, trim list), the site-packages (requirements.lock) and
the image itself (tag `tfship/tfserving-standin:<hash>` over the server code and this recipe).
`python -m serving_standin.build` (or scripts/serving-image) prints the tag; a second run is a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
CACHE_DIR = PROJECT_ROOT / "var" / "serving-image"
REPOSITORY = "tfship/tfserving-standin"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3",)
# Never needed at run time; on the vfs driver every byte is copied for each container.
TRIM_PATHS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/zoneinfo",
    "usr/share/common-licenses",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/cache/debconf",
    "usr/lib/python3.11/ensurepip",
    "usr/lib/python3.11/idlelib",
    "usr/lib/python3.11/tkinter",
    "usr/lib/python3.11/pydoc_data",
)
SITE_TRIM = ("tensorflow/include",)  # C++ headers for building ops: 290 MB nobody loads
# Only TensorFlow's own libraries are stripped: auditwheel-patched ones (numpy.libs/...) break when stripped.
STRIP_GLOBS = ("tensorflow/*.so*", "tensorflow/python/*.so")
SMOKE_TEST = "import tensorflow, numpy, serving_standin.server; print('ok', tensorflow.__version__)"
SERVER_FILES = (
    "__init__.py",
    "server.py",
    "flags.py",
    "model_config.py",
    "models.py",
    "core.py",
    "tensors.py",
    "rest.py",
    "protos.py",
    "grpc_api.py",
    "warmup.py",
)
IMAGE_FILES = (*SERVER_FILES, "entrypoint.sh", "tensorflow_model_server", "requirements.lock", "build.py")
CHANGES = [
    "ENV MODEL_NAME=model",
    "ENV MODEL_BASE_PATH=/models",
    "ENV PYTHONPATH=/opt/standin:/opt/standin/site",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "ENV TF_CPP_MIN_LOG_LEVEL=1",
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "EXPOSE 8500 8501",
    "LABEL tfship.standin=true",
    'ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]',
]


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def base_key() -> str:
    """Hash of the rootfs recipe."""
    return _digest(SUITE.encode(), MIRROR.encode(), *(p.encode() for p in BASE_PACKAGES + TRIM_PATHS))


def site_key() -> str:
    """Hash of the Python packages installed into the image."""
    recipe = (*SITE_TRIM, *STRIP_GLOBS)
    return _digest((PACKAGE_DIR / "requirements.lock").read_bytes(), *(p.encode() for p in recipe))


def image_tag() -> str:
    """`tfship/tfserving-standin:<hash>` over the server code, the recipe and the image changes."""
    parts = [name.encode() + b"\0" + (PACKAGE_DIR / name).read_bytes() for name in IMAGE_FILES]
    return f"{REPOSITORY}:{_digest(*parts, *(c.encode() for c in CHANGES), base_key().encode())}"


def _log(message: str) -> None:
    print(f"[serving-image] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time per checkout (parallel test sessions share the cache)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what}: {' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")


def _ensure_debootstrap() -> str:
    found = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if found:
        return found
    from harness import apt_install

    apt_install("debootstrap", part="the stand-in image build", error=RuntimeError)
    return "/usr/sbin/debootstrap"


def ensure_rootfs() -> Path:
    """A trimmed Debian minbase rootfs with python3 (debootstrap, cached by recipe)."""
    rootfs = CACHE_DIR / f"rootfs-{base_key()}"
    if (rootfs / ".complete").exists():
        return rootfs
    debootstrap = _ensure_debootstrap()
    partial = CACHE_DIR / f".rootfs-{base_key()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    _log(f"debootstrap {SUITE} minbase + {', '.join(BASE_PACKAGES)} into {partial}")
    _run(
        [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(partial), MIRROR],
        "debootstrap",
    )
    for relative in TRIM_PATHS:
        shutil.rmtree(partial / relative, ignore_errors=True)
    for name in ("tmp", "var/cache/apt", "var/lib/apt/lists"):
        (partial / name).mkdir(parents=True, exist_ok=True)
    (partial / ".complete").touch()
    shutil.rmtree(rootfs, ignore_errors=True)
    os.rename(partial, rootfs)
    _log(f"rootfs ready in {time.monotonic() - started:.0f}s")
    return rootfs


def ensure_site_packages() -> Path:
    """tensorflow-cpu and its import closure for Python 3.11 (the rootfs's python), stripped."""
    site = CACHE_DIR / f"site-{site_key()}"
    if (site / ".complete").exists():
        return site
    partial = CACHE_DIR / f".site-{site_key()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.monotonic()
    lock = str(PACKAGE_DIR / "requirements.lock")
    uv = shutil.which("uv")
    # The same interpreter version and glibc as bookworm's python3, so the venv's tags fit the image.
    if uv:
        # Copies, not uv's default hard links into its cache: `strip` below rewrites the files in
        # place and would otherwise corrupt the cache and every venv linked to it.
        command = [uv, "pip", "install", "-q", "--no-deps", "--link-mode", "copy", "--target", str(partial)]
        command += ["--python", sys.executable]
    else:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(partial)]
    _log(f"installing {lock} into {partial}")
    _run([*command, "-r", lock], "pip install")
    for relative in SITE_TRIM:
        shutil.rmtree(partial / relative, ignore_errors=True)
    for directory in partial.rglob("__pycache__"):
        shutil.rmtree(directory, ignore_errors=True)
    strip = shutil.which("strip")
    if strip:  # debug symbols are a third of libtensorflow_cc
        for library in (found for pattern in STRIP_GLOBS for found in partial.glob(pattern)):
            if library.is_file() and not library.is_symlink():
                subprocess.run([strip, "--strip-unneeded", str(library)], capture_output=True)
    (partial / ".complete").touch()
    shutil.rmtree(site, ignore_errors=True)
    os.rename(partial, site)
    _log(f"site-packages ready in {time.monotonic() - started:.0f}s")
    return site


def _assemble(rootfs: Path, site: Path, tree: Path) -> None:
    """Hard-link rootfs and site-packages into one tree and add the server (no big copies)."""
    shutil.rmtree(tree, ignore_errors=True)
    _run(["cp", "-al", str(rootfs), str(tree)], "assemble rootfs")
    (tree / ".complete").unlink()
    (tree / "opt" / "standin").mkdir(parents=True)
    _run(["cp", "-al", str(site), str(tree / "opt" / "standin" / "site")], "assemble site-packages")
    (tree / "opt" / "standin" / "site" / ".complete").unlink()
    package = tree / "opt" / "standin" / "serving_standin"
    package.mkdir()
    for name in SERVER_FILES:
        shutil.copy2(PACKAGE_DIR / name, package / name)
    for source, installed in (("entrypoint.sh", "tf_serving_entrypoint.sh"), ("tensorflow_model_server", None)):
        destination = tree / "usr" / "bin" / (installed or source)
        shutil.copy2(PACKAGE_DIR / source, destination)
        destination.chmod(0o755)
    (tree / "models").mkdir(exist_ok=True)
    # Compile once here: otherwise every container start compiles TensorFlow's Python again.
    _run(["python3", "-m", "compileall", "-q", "-j", "2", str(tree / "opt" / "standin")], "compileall")


def _smoke_test(client: Any, tag: str) -> None:
    """Import TensorFlow and the server inside the new image; a broken image is removed, never tagged for use."""
    container = client.create_container(tag, entrypoint=["python3", "-c", SMOKE_TEST], network_disabled=True)
    try:
        client.start(container["Id"])
        status = client.wait(container["Id"], timeout=300)["StatusCode"]
        output = client.logs(container["Id"]).decode("utf-8", "replace")
    finally:
        client.remove_container(container["Id"], force=True)
    if status != 0:
        client.remove_image(tag, force=True)
        raise RuntimeError(f"the stand-in image {tag} fails its smoke test (exit {status}):\n{output[-3000:]}")
    _log(f"smoke test of {tag}: {output.strip().splitlines()[-1]}")


def build_image(base_url: str, *, force: bool = False) -> str:
    """Build (or find) the stand-in image in the engine at `base_url`; return its tag."""
    import docker

    tag = image_tag()
    client = docker.APIClient(base_url=base_url, version="auto", timeout=600)
    try:
        if client.images(name=tag) and not force:
            return tag
        with _build_lock():
            if client.images(name=tag) and not force:
                return tag
            started = time.monotonic()
            rootfs, site = ensure_rootfs(), ensure_site_packages()
            tree, archive = CACHE_DIR / ".image-tree", CACHE_DIR / ".image.tar"
            _assemble(rootfs, site, tree)
            _run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(archive), "."], "tar")
            shutil.rmtree(tree, ignore_errors=True)
            repository, version = tag.split(":")
            _log(f"docker import {archive.stat().st_size / 1e6:.0f} MB as {tag}")
            client.import_image(src=str(archive), repository=repository, tag=version, changes=CHANGES)
            archive.unlink()
            _smoke_test(client, tag)
            _log(f"built {tag} in {time.monotonic() - started:.0f}s")
    finally:
        client.close()
    return tag


def main(argv: list[str] | None = None) -> int:
    """Build if needed and print the tag (`--tag-only`: print the tag without building)."""
    parser = argparse.ArgumentParser(prog="serving-image", description=__doc__.splitlines()[0])
    parser.add_argument("--tag-only", action="store_true", help="print the tag this checkout builds, build nothing")
    parser.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    args = parser.parse_args(argv)
    if args.tag_only:
        print(image_tag())
        return 0
    from harness.docker_engine import ensure_engine

    print(build_image(ensure_engine(), force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
