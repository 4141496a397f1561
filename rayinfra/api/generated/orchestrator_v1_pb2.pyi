# mypy: ignore-errors
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitTaskRequest(_message.Message):
    __slots__ = ("id", "payload", "priority", "workflow_id", "timeout_seconds")
    class PayloadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    payload: _containers.ScalarMap[str, str]
    priority: int
    workflow_id: str
    timeout_seconds: float
    def __init__(self, id: _Optional[str] = ..., payload: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., workflow_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., **kwargs) -> None: ...

class SubmitTaskResponse(_message.Message):
    __slots__ = ("success", "task_id", "error")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    success: bool
    task_id: str
    error: str
    def __init__(self, success: _Optional[bool] = ..., task_id: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class StreamTaskResultsRequest(_message.Message):
    __slots__ = ("task_ids", "include_completed", "changes_only")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    CHANGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    include_completed: bool
    changes_only: bool
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., include_completed: _Optional[bool] = ..., changes_only: _Optional[bool] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "status", "result", "error", "duration_ms", "completed_at", "result_json", "attempts", "started_at", "finished_at")
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    result: _containers.ScalarMap[str, str]
    error: str
    duration_ms: float
    completed_at: int
    result_json: str
    attempts: int
    started_at: float
    finished_at: float
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., result: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ..., duration_ms: _Optional[float] = ..., completed_at: _Optional[int] = ..., result_json: _Optional[str] = ..., attempts: _Optional[int] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ...) -> None: ...

class GetTaskStatusRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskStatusResponse(_message.Message):
    __slots__ = ("task_id", "status", "result", "error", "result_json", "attempts", "duration_ms", "completed_at", "task_class", "priority", "submitted_at", "started_at", "finished_at", "workflow_id", "timeout_seconds")
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    result: _containers.ScalarMap[str, str]
    error: str
    result_json: str
    attempts: int
    duration_ms: float
    completed_at: int
    task_class: str
    priority: int
    submitted_at: float
    started_at: float
    finished_at: float
    workflow_id: str
    timeout_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., result: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ..., result_json: _Optional[str] = ..., attempts: _Optional[int] = ..., duration_ms: _Optional[float] = ..., completed_at: _Optional[int] = ..., task_class: _Optional[str] = ..., priority: _Optional[int] = ..., submitted_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., workflow_id: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class SubmitTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[SubmitTaskRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[SubmitTaskRequest, _Mapping]]] = ...) -> None: ...

class SubmitTasksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitTaskResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitTaskResponse, _Mapping]]] = ...) -> None: ...

class GetTasksRequest(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTasksResponse(_message.Message):
    __slots__ = ("tasks", "not_found")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[GetTaskStatusResponse]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[_Union[GetTaskStatusResponse, _Mapping]]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task_id", "status", "cancelled")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: str
    cancelled: bool
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[str] = ..., cancelled: _Optional[bool] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("status", "task_class", "limit", "after")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    status: str
    task_class: str
    limit: int
    after: str
    def __init__(self, status: _Optional[str] = ..., task_class: _Optional[str] = ..., limit: _Optional[int] = ..., after: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[GetTaskStatusResponse]
    next: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[GetTaskStatusResponse, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class PollTaskChangesRequest(_message.Message):
    __slots__ = ("after_seq", "task_ids", "timeout_seconds", "terminal_only")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    terminal_only: bool
    def __init__(self, after_seq: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ..., terminal_only: _Optional[bool] = ...) -> None: ...

class PollTaskChangesResponse(_message.Message):
    __slots__ = ("seq", "changes")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    changes: _containers.RepeatedCompositeFieldContainer[TaskResult]
    def __init__(self, seq: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ...) -> None: ...

class GetRuntimeStatusRequest(_message.Message):
    __slots__ = ("service_names",)
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    service_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRuntimeStatusResponse(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class WorkflowRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("workflow_id", "limit")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    limit: int
    def __init__(self, workflow_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("items_json",)
    ITEMS_JSON_FIELD_NUMBER: _ClassVar[int]
    items_json: str
    def __init__(self, items_json: _Optional[str] = ...) -> None: ...

class WorkflowRunResponse(_message.Message):
    __slots__ = ("run_json",)
    RUN_JSON_FIELD_NUMBER: _ClassVar[int]
    run_json: str
    def __init__(self, run_json: _Optional[str] = ...) -> None: ...

class PurgeTasksRequest(_message.Message):
    __slots__ = ("older_than_seconds",)
    OLDER_THAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    older_than_seconds: float
    def __init__(self, older_than_seconds: _Optional[float] = ...) -> None: ...

class PurgeTasksResponse(_message.Message):
    __slots__ = ("deleted",)
    class DeletedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.ScalarMap[str, int]
    def __init__(self, deleted: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CreateWorkflowRequest(_message.Message):
    __slots__ = ("id", "name", "description", "spec")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    spec: bytes
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., spec: _Optional[bytes] = ...) -> None: ...

class CreateWorkflowResponse(_message.Message):
    __slots__ = ("success", "workflow_id", "error", "workflow_json")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_JSON_FIELD_NUMBER: _ClassVar[int]
    success: bool
    workflow_id: str
    error: str
    workflow_json: str
    def __init__(self, success: _Optional[bool] = ..., workflow_id: _Optional[str] = ..., error: _Optional[str] = ..., workflow_json: _Optional[str] = ...) -> None: ...

class StartWorkflowRunRequest(_message.Message):
    __slots__ = ("workflow_id", "idempotency_key", "input")
    class InputEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    idempotency_key: str
    input: _containers.ScalarMap[str, str]
    def __init__(self, workflow_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., input: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartWorkflowRunResponse(_message.Message):
    __slots__ = ("success", "run_id", "error", "reused")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    success: bool
    run_id: str
    error: str
    reused: bool
    def __init__(self, success: _Optional[bool] = ..., run_id: _Optional[str] = ..., error: _Optional[str] = ..., reused: _Optional[bool] = ...) -> None: ...

class StreamWorkflowStatusRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class WorkflowStatusUpdate(_message.Message):
    __slots__ = ("run_id", "status", "current_step", "steps_completed", "total_steps", "output", "error")
    class OutputEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    current_step: str
    steps_completed: int
    total_steps: int
    output: _containers.ScalarMap[str, str]
    error: str
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., current_step: _Optional[str] = ..., steps_completed: _Optional[int] = ..., total_steps: _Optional[int] = ..., output: _Optional[_Mapping[str, str]] = ..., error: _Optional[str] = ...) -> None: ...

class GetMetricsRequest(_message.Message):
    __slots__ = ("metric_names",)
    METRIC_NAMES_FIELD_NUMBER: _ClassVar[int]
    metric_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, metric_names: _Optional[_Iterable[str]] = ...) -> None: ...

class MetricsResponse(_message.Message):
    __slots__ = ("metrics", "timestamp")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    timestamp: int
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class StreamEventsRequest(_message.Message):
    __slots__ = ("event_types", "since_timestamp", "after_seq")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedScalarFieldContainer[str]
    since_timestamp: int
    after_seq: int
    def __init__(self, event_types: _Optional[_Iterable[str]] = ..., since_timestamp: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class SystemEvent(_message.Message):
    __slots__ = ("event_type", "resource_id", "data", "timestamp", "data_json", "seq")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    resource_id: str
    data: _containers.ScalarMap[str, str]
    timestamp: int
    data_json: str
    seq: int
    def __init__(self, event_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., data: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[int] = ..., data_json: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("healthy", "version", "services")
    class ServicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    version: str
    services: _containers.ScalarMap[str, str]
    def __init__(self, healthy: _Optional[bool] = ..., version: _Optional[str] = ..., services: _Optional[_Mapping[str, str]] = ...) -> None: ...
