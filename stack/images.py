"""`make images`: every image of the compose stack, built locally and cached by content hash.

Each image is tagged `tfship/stack-<name>:<hash>` over what it is made from (its Dockerfile, its
build context's files, its base's tag) and also `:current`, the tag docker-compose.yaml uses. An
image whose hash tag exists is not built again. Bases: the Dockerfiles default to Debian's
official `debian:bookworm-slim`; here, where no registry is reachable, `BASE` is a Debian
bookworm rootfs made by debootstrap and `docker import`ed (`--base official` uses the default).
TF Serving: the real image when the engine has it, else the stand-in (serving_standin.build).

Usage: python -m stack.images [--base local|official]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = PROJECT_ROOT / "stack"
CACHE_DIR = PROJECT_ROOT / "var" / "stack"
REPOSITORY = "tfship/stack-"
CURRENT = "current"
OFFICIAL_BASE = "debian:bookworm-slim"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
BASE_PACKAGES = ("ca-certificates",)
BASE_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "var/cache/apt", "var/lib/apt/lists")
# The machine's own extra CAs (an intercepting egress proxy, a company CA) go into the local base,
# so apt, Maven and pip inside the builds trust what this machine trusts.
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
# Recreated empty: dpkg's update-alternatives links man pages there (the JDK's postinst fails without).
BASE_EMPTY_DIRS = ("usr/share/man/man1", "var/cache/apt/archives/partial", "var/lib/apt/lists/partial")
# The project files the Airflow images carry; .dockerignore lets exactly these through.
CODE_PATHS = ("dags", "plugins", "include", "config")
REQUIREMENT_FILES = ("requirements.txt", "constraints.txt", "overrides.txt", "stack/airflow/requirements-stack.txt")


@dataclass(frozen=True)
class Image:
    """One image: its Dockerfile, context, the files its hash covers and its build arguments."""

    name: str
    dockerfile: Path
    context: Path
    inputs: tuple[Path, ...]
    args: dict[str, str] = field(default_factory=dict)
    deps: str = ""  # the image built first whose tag is this one's DEPS (else it gets BASE)


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _files(paths: Iterable[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += [p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
        elif path.is_file():
            found.append(path)
        else:
            raise SystemExit(f"image input {path} does not exist")
    return found


def _digest(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def content_tag(image: Image, args: dict[str, str]) -> str:
    """`tfship/stack-<name>:<hash>` over the Dockerfile, every input file (path and bytes) and the args."""
    parts = [image.dockerfile.read_bytes(), json.dumps(args, sort_keys=True).encode()]
    for path in _files(image.inputs):
        executable = bytes([path.stat().st_mode & 0o111 != 0])
        parts += [str(path.relative_to(PROJECT_ROOT)).encode(), path.read_bytes(), executable]
    return f"{REPOSITORY}{image.name}:{_digest(parts)}"


def images() -> list[Image]:
    """Every image of the stack, in build order."""
    root, stack = PROJECT_ROOT, STACK_DIR
    requirements = tuple(root / f for f in REQUIREMENT_FILES)
    code = tuple(root / p for p in CODE_PATHS)
    # A small image's context directory is its whole input.
    names = ("postgres", "redis", "nginx", "hadoop")
    small = [Image(n, stack / n / "Dockerfile", stack / n, (stack / n,)) for n in names]
    return [
        *small,
        Image("deps-control", stack / "airflow" / "deps.Dockerfile", root, requirements, {"PROFILE": "control"}),
        Image("deps-worker", stack / "airflow" / "deps.Dockerfile", root, requirements, {"PROFILE": "worker"}),
        Image("deps-serving", stack / "airflow" / "serving-deps.Dockerfile", root, requirements, deps="deps-control"),
        Image("airflow", stack / "airflow" / "Dockerfile", root, code, deps="deps-control"),
        Image("serving-host", stack / "airflow" / "Dockerfile", root, code, deps="deps-serving"),
        Image("worker", stack / "airflow" / "Dockerfile", root, code, deps="deps-worker"),
    ]


def _docker(*args: str, capture: bool = True, log: Path | None = None) -> subprocess.CompletedProcess:
    if log is None:
        return subprocess.run(["docker", *args], capture_output=capture, text=True)
    with open(log, "w") as out:
        return subprocess.run(["docker", *args], stdout=out, stderr=subprocess.STDOUT, text=True)


def exists(tag: str) -> bool:
    return _docker("image", "inspect", tag).returncode == 0


def _tag_current(tag: str) -> None:
    repository = tag.rsplit(":", 1)[0]
    done = _docker("tag", tag, f"{repository}:{CURRENT}")
    if done.returncode != 0:
        raise SystemExit(f"docker tag {tag} failed: {done.stderr.strip()}")


def local_base() -> str:
    """A Debian bookworm minbase, debootstrapped and imported once per recipe."""
    recipe_parts = (SUITE, MIRROR, *BASE_PACKAGES, *BASE_TRIM, *BASE_EMPTY_DIRS)
    extra_cas = sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []
    recipe = _digest([part.encode() for part in recipe_parts] + [ca.read_bytes() for ca in extra_cas])
    tag = f"{REPOSITORY}debian:{recipe}"
    if exists(tag):
        return tag
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise SystemExit("debootstrap is not installed (make setup installs it)")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = CACHE_DIR / f".rootfs-{recipe}"
    shutil.rmtree(rootfs, ignore_errors=True)
    started = time.monotonic()
    _log(f"debootstrap {SUITE} minbase into {rootfs}")
    done = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs), MIRROR],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"debootstrap failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    for relative in BASE_TRIM:
        shutil.rmtree(rootfs / relative, ignore_errors=True)
    for relative in BASE_EMPTY_DIRS:
        (rootfs / relative).mkdir(parents=True, exist_ok=True)
    if extra_cas:
        for ca in extra_cas:
            shutil.copy2(ca, rootfs / "usr/local/share/ca-certificates" / ca.name)
        done = subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"update-ca-certificates in the base failed: {done.stderr.strip()}")
        _log(f"base trusts this machine's extra CAs: {', '.join(ca.name for ca in extra_cas)}")
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["docker", "import", "--change", 'CMD ["bash"]', "-", tag], stdin=tar.stdout, capture_output=True, text=True
    )
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)
    if imported.returncode != 0 or tar.returncode != 0:
        raise SystemExit(f"docker import of the base failed: {imported.stderr.strip()}")
    _log(f"base {tag} in {time.monotonic() - started:.0f}s")
    return tag


def build(image: Image, tag: str, args: dict[str, str]) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log = CACHE_DIR / f"build-{image.name}.log"
    command = ["build", "--network", "host", "--force-rm", "-t", tag, "-f", str(image.dockerfile)]
    for key, value in sorted(args.items()):
        command += ["--build-arg", f"{key}={value}"]
    started = time.monotonic()
    _log(f"building {tag} (log: {log})")
    done = _docker(*command, str(image.context), log=log)
    if done.returncode != 0:
        raise SystemExit(f"building {image.name} failed; the end of {log}:\n{log.read_text()[-4000:]}")
    _log(f"built {tag} in {time.monotonic() - started:.0f}s")


def serving_image() -> str:
    """The real TF Serving image when the engine has it, else the stand-in (built if missing)."""
    from tfship.serving.container import REAL_IMAGE

    if exists(REAL_IMAGE):
        return REAL_IMAGE
    from serving_standin.build import build_image

    return build_image(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")


def build_all(base: str) -> dict[str, str]:
    """Build what is missing; return name -> content tag (every one also tagged :current)."""
    base_tag = OFFICIAL_BASE if base == "official" else local_base()
    tags: dict[str, str] = {"base": base_tag}
    for image in images():
        args = dict(image.args)
        if image.deps:
            args["DEPS"] = tags[image.deps]
        else:
            args["BASE"] = base_tag
        tag = content_tag(image, args)
        if not exists(tag):
            build(image, tag, args)
        _tag_current(tag)
        tags[image.name] = tag
    tags["serving"] = serving_image()
    done = _docker("tag", tags["serving"], f"{REPOSITORY}serving:{CURRENT}")  # TFSHIP_SERVING_IMAGE of the stack
    if done.returncode != 0:
        raise SystemExit(f"docker tag {tags['serving']} failed: {done.stderr.strip()}")
    return tags


def prune_superseded(keep: Iterable[str]) -> None:
    """Remove the older content tags of the stack's images (on vfs each one is a full copy on disk)."""
    keep = set(keep)
    listing = _docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    for tag in listing.stdout.split():
        if tag.startswith(REPOSITORY) and tag not in keep and not tag.endswith(f":{CURRENT}"):
            if _docker("rmi", tag).returncode == 0:
                _log(f"removed the superseded {tag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make images", description=__doc__.splitlines()[0])
    parser.add_argument("--base", choices=("local", "official"), default="local")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tags = build_all(args.base)
    prune_superseded(tags.values())
    width = max(map(len, tags))
    for name, tag in tags.items():
        print(f"{name:<{width}}  {tag}")
    _log(f"all images ready in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
