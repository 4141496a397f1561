"""A gateway serving TLS (``gateway.tls_cert_file`` + ``tls_key_file``): a runtime of this
module's own, started through the real CLI, with a self-signed certificate for 127.0.0.1."""

from __future__ import annotations

import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from rayinfra import AgentInfraSync
from rayinfra.api import stubs
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from tests.conftest import RuntimeSpec
from tests.support.runtime_cli import cli_runtime

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()


@dataclass
class Tls:
    spec: RuntimeSpec
    config: RayinfraConfig
    cert: Path

    def addr(self, key: str) -> str:
        return dial_addr(getattr(self.config.gateway, key))

    def ca(self) -> bytes:
        return self.cert.read_bytes()


def _self_signed(root: Path) -> tuple[Path, Path]:
    cert, key = root / "gateway.crt", root / "gateway.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls() -> Iterator[Tls]:
    made: list[Path] = []

    def lines(root: Path) -> str:
        cert, key = _self_signed(root)
        made.append(cert)
        return f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'

    def credentials() -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=made[0].read_bytes())

    with cli_runtime("rtls", lines, credentials=credentials) as rt:
        yield Tls(spec=rt.spec, config=rt.config, cert=made[0])


def test_grpc_serves_tls_on_both_services_and_refuses_plaintext(tls: Tls) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca())
    tid = f"tls-{uuid.uuid4().hex[:8]}"
    with grpc.secure_channel(tls.addr("orchestrator_grpc_addr"), creds) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        stub.SubmitTask(opb.SubmitTaskRequest(id=tid, payload={"type": "echo", "x": "1"}))
        st = stub.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid))
        assert st.task_id == tid and st.status in ("pending", "running", "completed")
    with grpc.secure_channel(tls.addr("env_manager_grpc_addr"), creds) as ch:
        res = epb_grpc.EnvManagerServiceStub(ch).GetResourceAvailability(
            epb.GetResourceAvailabilityRequest(workload_class="cpu_short"), timeout=10
        )
        assert res.hardware.cpu_cores >= 1
    # plaintext is refused on both services (the handshake fails before any call is served)
    with grpc.insecure_channel(tls.addr("orchestrator_grpc_addr")) as ch:
        with pytest.raises(grpc.RpcError) as e:
            opb_grpc.OrchestratorServiceStub(ch).Health(opb.HealthRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(tls.addr("env_manager_grpc_addr")) as ch:
        with pytest.raises(grpc.RpcError) as e:
            epb_grpc.EnvManagerServiceStub(ch).GetResourceAvailability(
                epb.GetResourceAvailabilityRequest(workload_class="cpu_short"), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    # a client that does not trust the certificate cannot connect either
    with grpc.secure_channel(
        tls.addr("orchestrator_grpc_addr"), grpc.ssl_channel_credentials()
    ) as ch:
        with pytest.raises(grpc.RpcError) as e:
            opb_grpc.OrchestratorServiceStub(ch).Health(opb.HealthRequest(), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_http_serves_tls_on_both_ports(tls: Tls) -> None:
    verify = ssl.create_default_context(cafile=str(tls.cert))
    for key in ("orchestrator_http_addr", "env_manager_http_addr"):
        r = httpx.get(f"https://{tls.addr(key)}/health", verify=verify, timeout=10)
        assert r.status_code == 200, (key, r.text)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{tls.addr(key)}/health", timeout=10)  # untrusted certificate
        with pytest.raises(httpx.HTTPError):
            # plaintext against a TLS port: the server drops the connection
            httpx.get(f"http://{tls.addr(key)}/health", timeout=10)


def test_agentinfra_over_grpc_verifies_the_gateway_certificate(tls: Tls, tmp_path: Path) -> None:
    """From another state dir, with only the address and the CA: submit and wait over TLS."""
    env = {
        "RAYINFRA_STATE_DIR": str(tmp_path / "client"),
        "RAYINFRA_TLS_CA_FILE": str(tls.cert),
        "DSPY_AGENT_SKIP_START": "1",
    }
    cfg = load_config(env=env).config
    with AgentInfraSync(orchestrator_addr=tls.addr("orchestrator_grpc_addr"), config=cfg) as infra:
        tid = f"tls-client-{uuid.uuid4().hex[:8]}"
        infra.submit_task(task_id=tid, payload={"type": "echo", "n": 1})
        assert infra.wait_task(tid, timeout=60)["result_payload"] == {"n": 1}
        assert infra.health_check()["services"]["scheduler"] == "healthy"
