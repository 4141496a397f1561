# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartServicesRequest(_message.Message):
    __slots__ = ("service_names", "parallel", "overrides")
    class OverridesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    service_names: _containers.RepeatedScalarFieldContainer[str]
    parallel: bool
    overrides: _containers.ScalarMap[str, str]
    def __init__(self, service_names: _Optional[_Iterable[str]] = ..., parallel: _Optional[bool] = ..., overrides: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ServiceStatusUpdate(_message.Message):
    __slots__ = ("service_name", "status", "message", "progress", "required")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    status: str
    message: str
    progress: int
    required: bool
    def __init__(self, service_name: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., progress: _Optional[int] = ..., required: _Optional[bool] = ...) -> None: ...

class StopServicesRequest(_message.Message):
    __slots__ = ("service_names", "timeout_seconds")
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    service_names: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: int
    def __init__(self, service_names: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class StopServicesResponse(_message.Message):
    __slots__ = ("success", "service_results")
    class ServiceResultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    service_results: _containers.ScalarMap[str, str]
    def __init__(self, success: _Optional[bool] = ..., service_results: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RestartServiceRequest(_message.Message):
    __slots__ = ("service_name", "timeout_seconds")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    timeout_seconds: int
    def __init__(self, service_name: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class RestartServiceResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class GetServicesStatusRequest(_message.Message):
    __slots__ = ("service_names",)
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    service_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ServicesStatusResponse(_message.Message):
    __slots__ = ("services",)
    class ServicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ServiceStatus
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ServiceStatus, _Mapping]] = ...) -> None: ...
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.MessageMap[str, ServiceStatus]
    def __init__(self, services: _Optional[_Mapping[str, ServiceStatus]] = ...) -> None: ...

class ServiceStatus(_message.Message):
    __slots__ = ("name", "status", "container_id", "ports", "health_checks", "started_at", "resource_usage")
    class HealthChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_CHECKS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_USAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    container_id: str
    ports: _containers.RepeatedScalarFieldContainer[int]
    health_checks: _containers.ScalarMap[str, str]
    started_at: int
    resource_usage: ResourceUsage
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., container_id: _Optional[str] = ..., ports: _Optional[_Iterable[int]] = ..., health_checks: _Optional[_Mapping[str, str]] = ..., started_at: _Optional[int] = ..., resource_usage: _Optional[_Union[ResourceUsage, _Mapping]] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "memory_bytes", "network_rx_bytes", "network_tx_bytes", "network_scope")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_SCOPE_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int
    network_scope: str
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., network_rx_bytes: _Optional[int] = ..., network_tx_bytes: _Optional[int] = ..., network_scope: _Optional[str] = ...) -> None: ...

class StreamHealthRequest(_message.Message):
    __slots__ = ("service_names", "interval_seconds")
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    service_names: _containers.RepeatedScalarFieldContainer[str]
    interval_seconds: int
    def __init__(self, service_names: _Optional[_Iterable[str]] = ..., interval_seconds: _Optional[int] = ...) -> None: ...

class HealthUpdate(_message.Message):
    __slots__ = ("service_name", "healthy", "message", "timestamp", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    healthy: bool
    message: str
    timestamp: int
    details: _containers.ScalarMap[str, str]
    def __init__(self, service_name: _Optional[str] = ..., healthy: _Optional[bool] = ..., message: _Optional[str] = ..., timestamp: _Optional[int] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetResourceAvailabilityRequest(_message.Message):
    __slots__ = ("workload_class",)
    WORKLOAD_CLASS_FIELD_NUMBER: _ClassVar[int]
    workload_class: str
    def __init__(self, workload_class: _Optional[str] = ...) -> None: ...

class ResourceAvailabilityResponse(_message.Message):
    __slots__ = ("available", "capacity", "in_use", "hardware")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    IN_USE_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    available: bool
    capacity: int
    in_use: int
    hardware: HardwareInfo
    def __init__(self, available: _Optional[bool] = ..., capacity: _Optional[int] = ..., in_use: _Optional[int] = ..., hardware: _Optional[_Union[HardwareInfo, _Mapping]] = ...) -> None: ...

class HardwareInfo(_message.Message):
    __slots__ = ("cpu_cores", "memory_bytes", "gpus")
    CPU_CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpu_cores: int
    memory_bytes: int
    gpus: _containers.RepeatedCompositeFieldContainer[GPU]
    def __init__(self, cpu_cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GPU, _Mapping]]] = ...) -> None: ...

class GPU(_message.Message):
    __slots__ = ("index", "name", "memory_bytes", "utilization_percent")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_bytes: int
    utilization_percent: float
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., utilization_percent: _Optional[float] = ...) -> None: ...

class ExecuteTaskRequest(_message.Message):
    __slots__ = ("task_id", "workload_class", "payload", "timeout_seconds")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_CLASS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    workload_class: str
    payload: _containers.ScalarMap[str, str]
    timeout_seconds: int
    def __init__(self, task_id: _Optional[str] = ..., workload_class: _Optional[str] = ..., payload: _Optional[_Mapping[str, str]] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class ExecuteTaskResponse(_message.Message):
    __slots__ = ("success", "result", "error", "latency_ms")
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    result: _containers.ScalarMap[str, str]
    error: str
    latency_ms: float
    def __init__(self, success: _Optional[bool] = ..., result: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class PullImagesRequest(_message.Message):
    __slots__ = ("image_names",)
    IMAGE_NAMES_FIELD_NUMBER: _ClassVar[int]
    image_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, image_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ImagePullProgress(_message.Message):
    __slots__ = ("image_name", "status", "current", "total", "progress_percent", "message")
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    image_name: str
    status: str
    current: int
    total: int
    progress_percent: int
    message: str
    def __init__(self, image_name: _Optional[str] = ..., status: _Optional[str] = ..., current: _Optional[int] = ..., total: _Optional[int] = ..., progress_percent: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("service_name", "follow", "tail", "since_timestamp", "tail_lines")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    follow: bool
    tail: int
    since_timestamp: int
    tail_lines: int
    def __init__(self, service_name: _Optional[str] = ..., follow: _Optional[bool] = ..., tail: _Optional[int] = ..., since_timestamp: _Optional[int] = ..., tail_lines: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("service_name", "container_id", "stream", "message", "timestamp", "logged_at")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    LOGGED_AT_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    container_id: str
    stream: str
    message: str
    timestamp: int
    logged_at: float
    def __init__(self, service_name: _Optional[str] = ..., container_id: _Optional[str] = ..., stream: _Optional[str] = ..., message: _Optional[str] = ..., timestamp: _Optional[int] = ..., logged_at: _Optional[float] = ...) -> None: ...

class PruneServicesRequest(_message.Message):
    __slots__ = ("timeout_seconds",)
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    timeout_seconds: int
    def __init__(self, timeout_seconds: _Optional[int] = ...) -> None: ...
