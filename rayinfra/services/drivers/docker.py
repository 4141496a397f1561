"""The Docker engine driver: service containers through the docker SDK (one wrapper, no Ray).

What it does with a :class:`~rayinfra.services.spec.ServiceSpec`:

- **Name and ownership.** The container is ``rayinfra-<cluster>-<service>`` (sanitised) and
  carries the caller's labels (``rayinfra.service``, ``rayinfra.cluster``, ``rayinfra.spec``)
  over the spec's own. Existing instances are found by exact label filters, never by a Docker
  ``name`` filter (a substring match): the same ``rayinfra.spec`` is reused (started if
  stopped), another is removed and recreated.
- **Networks.** ``network_mode`` (``host``, ``none``, ``container:<id>``) is used as given;
  ``networks`` are user-defined bridge networks, created if missing (labelled with the cluster),
  the container joining each with its service name as DNS alias (so ``redis://redis:6379``
  works between services). With neither, the container joins the user-defined bridge
  ``rayinfra-<cluster>`` (created if missing), or the constructor's ``default_network``
  (a network name, ``"host"`` or ``"none"``). Docker's default ``bridge`` is never used: it has
  no DNS between containers.
- **Container settings.** Ports publish on ``Port.host_ip`` (127.0.0.1 by default); env; named
  volumes (created if missing, labelled) and absolute binds with ``:ro``/``:rw``; command and
  entrypoint; ``init=True`` (so SIGTERM reaches a shell PID 1 and stops are fast); ``nano_cpus``
  and ``mem_limit``; GPU ``device_requests`` (a count, -1 = all, or device ids); a Docker
  HEALTHCHECK when ``health.kind == "container"`` has a ``command``. No restart policy, ever: the
  health checker owns restarts.
- **Errors** from the engine become :class:`DriverError` with a message a person can act on
  (image not found, registry unreachable, port already allocated, name taken) and a short
  ``reason``; an engine that cannot be reached is :class:`DriverUnavailableError` with a hint.

The pure half (names, network plan, create arguments, inspect/timestamp/pull/log decoding) is
:mod:`rayinfra.services.drivers.docker_format`; this module is the SDK edge: the driver, the
SDK-typed create arguments and the translation of engine errors.

The docker client is created lazily (constructing the driver never touches the engine) and is
shared by all threads (the SDK's connection pool is thread-safe).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.auth import resolve_repository_name
from docker.types import CancellableStream, DeviceRequest
from docker.utils import version_lt

from rayinfra.services.drivers.base import (
    DriverError,
    DriverUnavailableError,
    Instance,
    LogLine,
    PullProgress,
    Usage,
)
from rayinfra.services.drivers.docker_format import (
    DEFAULT_BRIDGE_NAMES,
    PullTracker,
    _log_frames,
    _log_lines,
    container_config,
    container_name,
    instance_from_inspect,
    named_volumes,
    plan_network,
    usage_from_stats,
)
from rayinfra.services.drivers.procnet import with_namespace_traffic
from rayinfra.services.spec import LABEL_CLUSTER, LABEL_SERVICE, LABEL_SPEC, ServiceSpec

# requests ships no type stubs here; only its exception classes are used
_requests_exc: Any = importlib.import_module("requests.exceptions")
# the SDK's translation of ``containers.create`` keywords into the engine API's arguments
_sdk_containers: Any = importlib.import_module("docker.models.containers")

DEFAULT_TIMEOUT_S = 60.0
UNAVAILABLE_HINT = "hint: start dockerd or set DOCKER_HOST / services.docker_host"
EXEC_TIMEOUT_EXIT = 124  # what coreutils `timeout` returns

# ------------------------------------------------------------------------------------------
# SDK-typed arguments and engine errors (the pure helpers are in docker_format)
# ------------------------------------------------------------------------------------------


#: keyword arguments for ``client.containers.create`` (without ``networking_config``):
#: :func:`~rayinfra.services.drivers.docker_format.container_config` with GPU requests as the
#: SDK's ``DeviceRequest``
create_kwargs = functools.partial(container_config, device_request=DeviceRequest)


def registry_of(image: str) -> str:
    """The registry host an image reference pulls from (``docker.io`` for Docker Hub)."""
    repo = image.split("@", 1)[0]
    head, sep, tail = repo.rpartition(":")
    if sep and "/" not in tail:
        repo = head
    try:
        index, _ = resolve_repository_name(repo)
    except docker.errors.DockerException:
        return "?"
    return "docker.io" if index in ("index.docker.io", "docker.io") else str(index)


def _explanation(e: BaseException) -> str:
    text = getattr(e, "explanation", None)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or e).strip()


_UNREACHABLE = (
    "connection refused",
    "no such host",
    "dial tcp",
    "i/o timeout",
    "timeout exceeded",
    "tls handshake",
    "http response to https client",
    "network is unreachable",
    "no route to host",
)
_UNKNOWN_IMAGE = (
    "manifest unknown",
    "not found",
    "pull access denied",
    "repository does not exist",
    "name unknown",
    "no such image",
)


def pull_error(image: str, e: BaseException | str) -> DriverError:
    """A pull failure as an actionable :class:`DriverError` naming image and registry."""
    msg = e if isinstance(e, str) else _explanation(e)
    low = msg.lower()
    registry = registry_of(image)
    if any(s in low for s in _UNREACHABLE):
        return DriverError(
            f"cannot pull {image}: registry {registry} is unreachable ({msg}); hint: check that "
            "the registry runs and the address is right (a plain-HTTP registry off loopback "
            "must be in dockerd's insecure-registries), or build/load the image locally",
            reason="registry_unreachable",
        )
    if any(s in low for s in _UNKNOWN_IMAGE):
        return DriverError(
            f"cannot pull {image}: not found in registry {registry} ({msg}); hint: check the "
            "image name and tag (and `docker login` for a private repository)",
            reason="image_not_found",
        )
    return DriverError(f"cannot pull {image} from {registry}: {msg}", reason="pull_failed")


def api_error(action: str, e: BaseException) -> DriverError:
    """An engine error as an actionable :class:`DriverError`."""
    msg = _explanation(e)
    low = msg.lower()
    if "port is already allocated" in low or "address already in use" in low:
        return DriverError(
            f"{action}: a published port is already in use ({msg}); hint: stop what listens "
            "on that port or change the service's `ports`",
            reason="port_in_use",
        )
    if "is already in use by container" in low:
        return DriverError(
            f"{action}: the container name is taken ({msg}); hint: remove or rename that "
            "container (rayinfra does not adopt containers without its labels)",
            reason="name_conflict",
        )
    if "is not running" in low:
        reason = "not_running"
    elif "no such image" in low:
        reason = "image_not_found"
    else:
        reason = "not_found" if isinstance(e, docker.errors.NotFound) else "docker_error"
    return DriverError(f"{action}: {msg}", reason=reason)


# ------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------


class DockerDriver:
    """:class:`~rayinfra.services.drivers.base.Driver` on a Docker engine.

    ``base_url`` (``unix:///run/docker.sock``, ``tcp://127.0.0.1:2375``...) defaults to
    ``DOCKER_HOST`` / the SDK default; ``timeout_s`` bounds each API call (pulls and followed
    logs are unbounded); ``default_network`` replaces ``rayinfra-<cluster>`` for specs that
    name no network (a user network name, ``"host"`` or ``"none"``).
    """

    kind = "docker"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        default_network: str | None = None,
    ) -> None:
        if default_network in DEFAULT_BRIDGE_NAMES:
            raise ValueError("default_network cannot be Docker's default bridge")
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.default_network = default_network
        self._docker: Any = None
        self._lock = threading.Lock()
        # (cluster, service, spec label) -> a container prepare() created, not yet started
        self._prepared: dict[tuple[str | None, str, str], str] = {}

    # -- client and errors ---------------------------------------------------------------

    def _where(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def _unavailable(self, e: BaseException) -> DriverUnavailableError:
        return DriverUnavailableError(
            f"docker unavailable: cannot reach the engine at {self._where()} "
            f"({_explanation(e)}); {UNAVAILABLE_HINT}"
        )

    def _client(self) -> Any:
        with self._lock:
            if self._docker is None:
                try:
                    self._docker = (
                        docker.DockerClient(base_url=self.base_url, timeout=self.timeout_s)
                        if self.base_url
                        else docker.from_env(timeout=self.timeout_s)
                    )
                except (docker.errors.DockerException, _requests_exc.RequestException) as e:
                    raise self._unavailable(e) from e
            return self._docker

    def _api(self) -> Any:
        return self._client().api

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DriverError:
            raise
        except docker.errors.APIError as e:
            raise api_error(action, e) from e
        except _requests_exc.ConnectionError as e:
            raise self._unavailable(e) from e
        except _requests_exc.Timeout as e:
            raise DriverError(
                f"{action}: the docker engine did not answer within {self.timeout_s:g}s",
                reason="timeout",
            ) from e
        except (docker.errors.DockerException, _requests_exc.RequestException) as e:
            raise DriverError(f"{action}: {_explanation(e)}", reason="docker_error") from e

    def close(self) -> None:
        """Close the client's connections (a later call reconnects)."""
        with self._lock:
            if self._docker is not None:
                self._docker.close()
                self._docker = None

    # -- Driver ---------------------------------------------------------------------------

    def check(self) -> None:
        try:
            self._client().ping()
        except DriverUnavailableError:
            raise
        except (docker.errors.DockerException, _requests_exc.RequestException, OSError) as e:
            raise self._unavailable(e) from e

    def _plan(
        self, spec: ServiceSpec, labels: Mapping[str, str]
    ) -> tuple[dict[str, str], str | None, str]:
        """``(labels the instance carries, its cluster, what a failure is said to be)``."""
        if spec.driver != "docker" or not spec.image:
            raise DriverError(f"{spec.name} is not a docker service", reason="invalid_spec")
        want = {**spec.labels, **labels}
        want.setdefault(LABEL_SERVICE, spec.name)
        want.setdefault(LABEL_SPEC, spec.fingerprint())
        return want, want.get(LABEL_CLUSTER), f"cannot start {spec.name}"

    def start(self, spec: ServiceSpec, labels: Mapping[str, str]) -> Instance:
        want, cluster, action = self._plan(spec, labels)
        with self._errors(action):
            prepared = self._prepared.pop((cluster, spec.name, want[LABEL_SPEC]), None)
            if prepared is not None:
                with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                    return self._start_created(prepared, action)
            adopted = self._adopt(spec.name, cluster, want[LABEL_SPEC], action)
            if adopted is not None:
                return adopted
            try:
                cid = self._create_new(spec, want, cluster)
            except docker.errors.APIError as e:
                if e.status_code == 409:  # a concurrent start of the same spec won the race
                    again = self._adopt(spec.name, cluster, want[LABEL_SPEC], action)
                    if again is not None:
                        return again
                raise
            return self._start_created(cid, action)

    def prepare(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """All of a start but the start itself: the image, volumes and networks, and the
        container created, not started, unless an instance of this spec exists already. The
        next :meth:`start` of the spec starts that container (one engine call instead of a
        create and a start); :meth:`discard_prepared` removes it if no start comes."""
        want, cluster, action = self._plan(spec, labels)
        with self._errors(action):
            same = [
                c
                for c in self._candidates(spec.name, cluster)
                if (c["Config"].get("Labels") or {}).get(LABEL_SPEC) == want[LABEL_SPEC]
            ]
            if same:
                return  # started (or adopted) as it is
            try:
                cid = self._create_new(spec, want, cluster)
            except docker.errors.APIError as e:
                if e.status_code == 409:  # a concurrent start is creating it
                    return
                raise
            self._prepared[(cluster, spec.name, want[LABEL_SPEC])] = cid

    def discard_prepared(self, spec: ServiceSpec, labels: Mapping[str, str]) -> None:
        """Remove the container :meth:`prepare` created for ``spec`` if it was never started."""
        want, cluster, _ = self._plan(spec, labels)
        cid = self._prepared.pop((cluster, spec.name, want[LABEL_SPEC]), None)
        if cid is not None:
            with (
                self._errors(f"cannot remove the unstarted {spec.name}"),
                contextlib.suppress(docker.errors.NotFound),
            ):
                self._api().remove_container(cid, force=True, v=False)

    def _create_new(self, spec: ServiceSpec, want: dict[str, str], cluster: str | None) -> str:
        """Create a container of ``spec`` (its image, named volumes and networks first),
        connected to all its networks, not started; its id."""
        mode, networks = plan_network(spec, cluster, self.default_network)
        self._ensure_image(spec, f"cannot start {spec.name}")
        owner = {LABEL_CLUSTER: cluster} if cluster else {}
        for vol in named_volumes(spec):
            self._ensure_volume(vol, owner)
        for net in networks:
            self._ensure_network(net, owner)
        kw = create_kwargs(spec, want, container_name(cluster, spec.name), mode, networks)
        api = self._api()
        if networks:
            kw["networking_config"] = {networks[0]: api.create_endpoint_config(aliases=[spec.name])}
        cid = self._create(kw)
        try:
            for net in networks[1:]:
                api.connect_container_to_network(cid, net, aliases=[spec.name])
        except docker.errors.APIError:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(cid, force=True, v=False)
            raise
        return cid

    def _start_created(self, cid: str, action: str) -> Instance:
        """Start a created container (removed again if the start fails) and inspect it."""
        api = self._api()
        try:
            api.start(cid)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as e:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(cid, force=True, v=False)
            raise api_error(action, e) from e
        return self.inspect(cid)

    def _create(self, kw: dict[str, Any]) -> str:
        """``containers.create(**kw)``'s container id, without the inspect the SDK's model
        makes of it (one engine round trip less per start: :meth:`start` inspects once
        started)."""
        to_api = getattr(_sdk_containers, "_create_container_args", None)
        if to_api is None:  # an SDK without the helper: the model's way
            return str(self._client().containers.create(**kw).id)
        api = self._api()
        args = dict(kw)
        args["version"] = api._version
        args.setdefault("command", None)
        return str(api.create_container(**to_api(args))["Id"])

    def _inspect_labelled(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """``docker inspect`` of every container carrying all of ``labels`` (any state)."""
        api = self._api()
        out = []
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for summary in api.containers(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):  # removed meanwhile
                out.append(api.inspect_container(summary["Id"]))
        return out

    def _candidates(self, service: str, cluster: str | None) -> list[dict[str, Any]]:
        out = self._inspect_labelled(
            {LABEL_SERVICE: service, **({LABEL_CLUSTER: cluster} if cluster else {})}
        )
        # without a cluster label, only containers that have none are ours
        if not cluster:
            out = [c for c in out if LABEL_CLUSTER not in (c["Config"].get("Labels") or {})]
        return out

    def _adopt(
        self, service: str, cluster: str | None, spec_hash: str, action: str
    ) -> Instance | None:
        """Reuse the instance with this spec (started if stopped); remove every other one."""
        api = self._api()
        keep: dict[str, Any] | None = None
        candidates = self._candidates(service, cluster)
        # prefer a running match, then the newest
        candidates.sort(key=lambda c: (c["State"].get("Running", False), c.get("Created", "")))
        for c in reversed(candidates):
            same = (c["Config"].get("Labels") or {}).get(LABEL_SPEC) == spec_hash
            if keep is None and same and c["State"].get("Status") not in ("removing", "dead"):
                keep = c
            else:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(c["Id"], force=True, v=False)
        if keep is None:
            return None
        if not keep["State"].get("Running"):
            try:
                api.start(keep["Id"])
            except docker.errors.APIError as e:
                raise api_error(action, e) from e
        return self.inspect(str(keep["Id"]))

    def _ensure_image(self, spec: ServiceSpec, action: str) -> None:
        image = str(spec.image)
        with contextlib.suppress(docker.errors.NotFound):
            self._api().inspect_image(image)
            return
        try:
            for _ in self.pull(image):
                pass
        except DriverUnavailableError:
            raise
        except DriverError as e:
            raise DriverError(f"{action}: {e}", reason=e.reason) from e

    def _ensure_volume(self, name: str, labels: Mapping[str, str]) -> None:
        api = self._api()
        try:
            api.inspect_volume(name)
        except docker.errors.NotFound:
            api.create_volume(name=name, labels=dict(labels))

    def _ensure_network(self, name: str, labels: Mapping[str, str]) -> None:
        api = self._api()
        with contextlib.suppress(docker.errors.NotFound):
            if api.inspect_network(name).get("Name") == name:
                return
        try:
            api.create_network(name, driver="bridge", labels=dict(labels), check_duplicate=True)
        except docker.errors.APIError as e:
            if e.status_code != 409:  # created meanwhile by a concurrent start
                raise

    def stop(self, instance_id: str, timeout_s: float) -> None:
        t = max(0, math.ceil(timeout_s))
        with (
            self._errors(f"cannot stop {instance_id[:12]}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self._api().stop(instance_id, timeout=t)

    def remove(self, instance_id: str) -> None:
        with self._errors(f"cannot remove {instance_id[:12]}"):
            try:
                self._api().remove_container(instance_id, force=True, v=False)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if "already in progress" not in _explanation(e):
                    raise

    def inspect(self, instance_id: str) -> Instance:
        with self._errors(f"cannot inspect {instance_id[:12]}"):
            try:
                data = self._api().inspect_container(instance_id)
            except docker.errors.NotFound:
                return Instance(id=instance_id, service="", driver="docker", state="missing")
        return instance_from_inspect(data)

    def wait_exit(self, instance_id: str, timeout_s: float) -> Instance:
        """The engine's wait (``condition=not-running``: at once for an ended container),
        at most ``timeout_s``; then :meth:`inspect` (which reports an engine that went away)."""
        try:
            self._api().wait(instance_id, timeout=max(timeout_s, 0.001), condition="not-running")
        except docker.errors.NotFound:
            return Instance(id=instance_id, service="", driver="docker", state="missing")
        except (docker.errors.APIError, _requests_exc.RequestException):
            pass  # the time ran out (a read timeout comes as ConnectionError), or worse: inspect
        return self.inspect(instance_id)

    def list_owned(self, labels: Mapping[str, str]) -> list[Instance]:
        if not labels:  # would list every container on the engine, ours or not
            raise ValueError("list_owned needs at least one label to match")
        with self._errors("cannot list containers"):
            return [instance_from_inspect(c) for c in self._inspect_labelled(labels)]

    def usage(self, instance_id: str) -> Usage:
        """One ``stats`` sample (one-shot; the engine samples once a second, so a call can
        wait up to ~1 s): :func:`usage_from_stats`. A container with no interfaces of its own
        in the stats (``network_mode`` host or none) gets its network namespace's counters
        from ``/proc`` (:func:`~rayinfra.services.drivers.procnet.namespace_traffic`) when the
        engine runs on this machine; else its network counters stay unmeasured."""
        with self._errors(f"cannot read stats of {instance_id[:12]}"):
            api = self._api()
            kwargs = {} if version_lt(api.api_version, "1.41") else {"one_shot": True}
            s = api.stats(instance_id, stream=False, **kwargs)
        usage = usage_from_stats(s, time.monotonic(), time.time())
        if usage.network_scope:
            return usage
        return with_namespace_traffic(usage, self.inspect(instance_id).pid)

    def logs(
        self, instance_id: str, *, follow: bool, tail: int | None, since: float | None
    ) -> Iterator[LogLine]:
        """Docker logs (stdout and stderr, demultiplexed), each line with its own timestamp.

        ``tail=None`` is all lines, ``tail=n`` the last n, in timestamp order; ``since`` is unix
        seconds. With ``follow`` the iterator (in arrival order) ends when the container stops;
        ``close()`` it to stop early.
        """
        action = f"cannot read logs of {instance_id[:12]}"
        with self._errors(action):
            api = self._api()
            tty = bool((api.inspect_container(instance_id).get("Config") or {}).get("Tty"))
            params: dict[str, Any] = {
                "stdout": 1,
                "stderr": 1,
                "timestamps": 1,
                "follow": 1 if follow else 0,
                "tail": "all" if tail is None else str(max(0, tail)),
            }
            if since is not None and since > 0:
                params["since"] = f"{since:.9f}"
            url = api._url("/containers/{0}/logs", instance_id)
            res = api._get(
                url, params=params, stream=True, timeout=None if follow else self.timeout_s
            )
            sock = api._get_raw_response_socket(res)  # raises APIError for an HTTP error
            if follow:
                api._disable_socket_timeout(sock)
        frames = _log_frames(res.raw, tty)
        stream = CancellableStream(frames, res)
        try:
            lines = _log_lines(stream)
            # Docker orders the two streams by arrival, so lines written to stdout and stderr
            # within microseconds can come swapped: a finished read is put in timestamp order
            yield from lines if follow else sorted(lines, key=lambda ln: ln.timestamp)
        except (OSError, _requests_exc.RequestException, docker.errors.DockerException) as e:
            if follow:  # closed from another thread, or the engine went away mid-stream
                return
            raise DriverError(f"{action}: {_explanation(e)}", reason="docker_error") from e
        finally:
            for closable in (stream, res):
                with contextlib.suppress(Exception):
                    closable.close()

    def exec(self, instance_id: str, argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` in the container; (exit code, stdout+stderr in arrival order).

        After ``timeout_s`` the process is killed (when this host sees the engine's pids) and
        ``(124, output so far + a note)`` is returned, like coreutils ``timeout``.
        """
        action = f"cannot exec in {instance_id[:12]}"
        with self._errors(action):
            api = self._api()
            exec_id = api.exec_create(instance_id, list(argv), stdout=True, stderr=True)["Id"]
            stream = api.exec_start(exec_id, stream=True, demux=False)
        chunks: list[bytes] = []
        done = threading.Event()

        def pump() -> None:
            try:  # an error here means the stream was closed on timeout
                with contextlib.suppress(
                    OSError,
                    ValueError,
                    _requests_exc.RequestException,
                    docker.errors.DockerException,
                ):
                    for chunk in stream:
                        chunks.append(chunk)
            finally:
                done.set()

        threading.Thread(target=pump, name=f"docker-exec-{exec_id[:8]}", daemon=True).start()
        if not done.wait(timeout_s):
            killed = self._kill_exec(exec_id, instance_id)
            with contextlib.suppress(Exception):
                stream.close()
            done.wait(2.0)
            note = "killed" if killed else "could not be killed from this host and may still run"
            out = b"".join(chunks).decode(errors="replace")
            if out and not out.endswith("\n"):
                out += "\n"
            return EXEC_TIMEOUT_EXIT, out + f"[rayinfra: timed out after {timeout_s:g}s; {note}]"
        out = b"".join(chunks).decode(errors="replace")
        with self._errors(action):
            deadline = time.monotonic() + 5.0
            while True:
                info = api.exec_inspect(exec_id)
                if not info.get("Running") or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        code = info.get("ExitCode")
        return (int(code) if code is not None else -1), out

    def _kill_exec(self, exec_id: str, instance_id: str) -> bool:
        """SIGKILL an exec's process, only if /proc shows it in the container's pid namespace."""
        try:
            api = self._api()
            pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
            main = int((api.inspect_container(instance_id).get("State") or {}).get("Pid") or 0)
            if pid <= 0 or main <= 0:
                return False
            if Path(f"/proc/{pid}/ns/pid").readlink() != Path(f"/proc/{main}/ns/pid").readlink():
                return False
            os.kill(pid, 9)
            return True
        except (OSError, docker.errors.DockerException, _requests_exc.RequestException):
            return False

    def pull(self, image: str) -> Iterator[PullProgress]:
        tracker = PullTracker(image)
        last_status = ""
        try:
            events = self._api().pull(image, stream=True, decode=True)
            for event in events:
                if "error" in event:
                    detail = event.get("errorDetail") or {}
                    raise pull_error(image, str(detail.get("message") or event["error"]))
                last_status = str(event.get("status") or last_status)
                progress = tracker.feed(event)
                if progress is not None:
                    yield progress
        except DriverError:
            raise
        except _requests_exc.ConnectionError as e:  # between us and the engine
            raise self._unavailable(e) from e
        except (docker.errors.DockerException, _requests_exc.RequestException) as e:
            raise pull_error(image, e) from e
        yield tracker.complete(last_status)
