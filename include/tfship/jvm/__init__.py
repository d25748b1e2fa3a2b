"""The project's few JVM classes (Java sources beside this file) and the jar Spark loads them from.

Spark jobs that need them are submitted with `--jars <hadoop_jar_path()>`; `build_hadoop_jar()`
compiles the jar once per source content against the Hadoop client jars that pyspark ships.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from tfship.errors import ConfigError

SOURCES = Path(__file__).resolve().parent
# Spark's writer of named binary files through Hadoop's client (see the Java doc).
NAMED_FILE_OUTPUT_FORMAT = "tfship.hadoop.NamedFileOutputFormat"
JAR_DIR = Path(os.environ.get("TFSHIP_JVM_DIR", SOURCES.parents[2] / "var" / "jvm"))


def _java_sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def hadoop_jar_path() -> Path:
    """Where the jar of the current sources lives (cheap: only hashes the sources)."""
    digest = hashlib.sha256()
    for source in _java_sources():
        digest.update(str(source.relative_to(SOURCES)).encode() + b"\0" + source.read_bytes())
    return JAR_DIR / f"tfship-hadoop-{digest.hexdigest()[:16]}.jar"


def _javac() -> str:
    found = shutil.which("javac")
    if found:
        return found
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "javac").exists():
        return str(Path(home, "bin", "javac"))
    raise ConfigError("javac not found (JAVA_HOME or PATH): a JDK is needed to build the project's Hadoop jar")


def build_hadoop_jar() -> Path:
    """The jar of the current sources, compiled first if it is not there yet."""
    jar = hadoop_jar_path()
    if jar.exists():
        return jar
    import pyspark

    classpath = Path(pyspark.__file__).resolve().parent / "jars" / "*"
    jar.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jar.parent) as scratch:
        classes = Path(scratch, "classes")
        done = subprocess.run(
            [_javac(), "--release", "17", "-nowarn", "-d", str(classes), "-cp", str(classpath)]
            + [str(s) for s in _java_sources()],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ConfigError(f"javac failed building {jar.name}: {done.stderr.strip()[-2000:]}")
        built = Path(scratch, jar.name)
        with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for path in sorted(classes.rglob("*.class")):
                archive.write(path, str(path.relative_to(classes)))
        os.replace(built, jar)  # atomic: a concurrent build of the same sources writes the same jar
    return jar
