from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TruncationRange(_message.Message):
    __slots__ = ("epoch", "after_lsn", "through_lsn")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    THROUGH_LSN_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    after_lsn: int
    through_lsn: int
    def __init__(self, epoch: _Optional[int] = ..., after_lsn: _Optional[int] = ..., through_lsn: _Optional[int] = ...) -> None: ...

class NodeState(_message.Message):
    __slots__ = ("name", "az", "epoch", "epoch_owner", "scl", "cpl_at_scl", "highest_lsn", "vdl", "vdl_epoch", "truncations", "format_version", "serving", "min_read_point", "records_stored", "page_versions_stored", "truncations_version", "repair_floor", "instances", "coalesced_through", "gc_horizon", "hydrating_to", "hydrated_pages", "hydrated_bytes", "membership", "volume_id", "frame_port")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCH_OWNER_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    CPL_AT_SCL_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_LSN_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    VDL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    MIN_READ_POINT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_STORED_FIELD_NUMBER: _ClassVar[int]
    PAGE_VERSIONS_STORED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FLOOR_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    COALESCED_THROUGH_FIELD_NUMBER: _ClassVar[int]
    GC_HORIZON_FIELD_NUMBER: _ClassVar[int]
    HYDRATING_TO_FIELD_NUMBER: _ClassVar[int]
    HYDRATED_PAGES_FIELD_NUMBER: _ClassVar[int]
    HYDRATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_PORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    az: str
    epoch: int
    epoch_owner: str
    scl: int
    cpl_at_scl: int
    highest_lsn: int
    vdl: int
    vdl_epoch: int
    truncations: _containers.RepeatedCompositeFieldContainer[TruncationRange]
    format_version: int
    serving: bool
    min_read_point: int
    records_stored: int
    page_versions_stored: int
    truncations_version: int
    repair_floor: int
    instances: _containers.RepeatedCompositeFieldContainer[InstanceView]
    coalesced_through: int
    gc_horizon: int
    hydrating_to: int
    hydrated_pages: int
    hydrated_bytes: int
    membership: MembershipView
    volume_id: str
    frame_port: int
    def __init__(self, name: _Optional[str] = ..., az: _Optional[str] = ..., epoch: _Optional[int] = ..., epoch_owner: _Optional[str] = ..., scl: _Optional[int] = ..., cpl_at_scl: _Optional[int] = ..., highest_lsn: _Optional[int] = ..., vdl: _Optional[int] = ..., vdl_epoch: _Optional[int] = ..., truncations: _Optional[_Iterable[_Union[TruncationRange, _Mapping]]] = ..., format_version: _Optional[int] = ..., serving: _Optional[bool] = ..., min_read_point: _Optional[int] = ..., records_stored: _Optional[int] = ..., page_versions_stored: _Optional[int] = ..., truncations_version: _Optional[int] = ..., repair_floor: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[InstanceView, _Mapping]]] = ..., coalesced_through: _Optional[int] = ..., gc_horizon: _Optional[int] = ..., hydrating_to: _Optional[int] = ..., hydrated_pages: _Optional[int] = ..., hydrated_bytes: _Optional[int] = ..., membership: _Optional[_Union[MembershipView, _Mapping]] = ..., volume_id: _Optional[str] = ..., frame_port: _Optional[int] = ...) -> None: ...

class MembershipView(_message.Message):
    __slots__ = ("epoch", "holders", "change_position", "change_old", "change_new", "writer_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_POSITION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_OLD_FIELD_NUMBER: _ClassVar[int]
    CHANGE_NEW_FIELD_NUMBER: _ClassVar[int]
    WRITER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    holders: _containers.RepeatedScalarFieldContainer[str]
    change_position: str
    change_old: str
    change_new: str
    writer_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., holders: _Optional[_Iterable[str]] = ..., change_position: _Optional[str] = ..., change_old: _Optional[str] = ..., change_new: _Optional[str] = ..., writer_epoch: _Optional[int] = ...) -> None: ...

class SetMembershipRequest(_message.Message):
    __slots__ = ("membership", "epoch")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    membership: MembershipView
    epoch: int
    def __init__(self, membership: _Optional[_Union[MembershipView, _Mapping]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ReplaceRequest(_message.Message):
    __slots__ = ("old", "new", "force")
    OLD_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    old: str
    new: str
    force: bool
    def __init__(self, old: _Optional[str] = ..., new: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class ReplaceResponse(_message.Message):
    __slots__ = ("membership", "durable_point")
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    DURABLE_POINT_FIELD_NUMBER: _ClassVar[int]
    membership: MembershipView
    durable_point: int
    def __init__(self, membership: _Optional[_Union[MembershipView, _Mapping]] = ..., durable_point: _Optional[int] = ...) -> None: ...

class InstanceView(_message.Message):
    __slots__ = ("name", "address", "role", "read_point", "seen_s_ago", "client_address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    SEEN_S_AGO_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    role: str
    read_point: int
    seen_s_ago: float
    client_address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., read_point: _Optional[int] = ..., seen_s_ago: _Optional[float] = ..., client_address: _Optional[str] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("epoch", "records", "vdl", "membership_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    records: _containers.RepeatedScalarFieldContainer[bytes]
    vdl: int
    membership_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., records: _Optional[_Iterable[bytes]] = ..., vdl: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("scl", "epoch")
    SCL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    scl: int
    epoch: int
    def __init__(self, scl: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class AppendBatch(_message.Message):
    __slots__ = ("epoch", "records", "vdl", "batch_id", "membership_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    records: bytes
    vdl: int
    batch_id: int
    membership_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., records: _Optional[bytes] = ..., vdl: _Optional[int] = ..., batch_id: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class AppendBatchAck(_message.Message):
    __slots__ = ("batch_id", "scl", "epoch", "error", "message")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    scl: int
    epoch: int
    error: str
    message: str
    def __init__(self, batch_id: _Optional[int] = ..., scl: _Optional[int] = ..., epoch: _Optional[int] = ..., error: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReadRecordsRequest(_message.Message):
    __slots__ = ("after_lsn", "through_lsn", "max_records", "page_no", "membership_epoch")
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    THROUGH_LSN_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_lsn: int
    through_lsn: int
    max_records: int
    page_no: int
    membership_epoch: int
    def __init__(self, after_lsn: _Optional[int] = ..., through_lsn: _Optional[int] = ..., max_records: _Optional[int] = ..., page_no: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class ReadRecordsResponse(_message.Message):
    __slots__ = ("records", "scl", "epoch", "gc_horizon")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    GC_HORIZON_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[bytes]
    scl: int
    epoch: int
    gc_horizon: int
    def __init__(self, records: _Optional[_Iterable[bytes]] = ..., scl: _Optional[int] = ..., epoch: _Optional[int] = ..., gc_horizon: _Optional[int] = ...) -> None: ...

class GetPageRequest(_message.Message):
    __slots__ = ("page_no", "lsn", "min_epoch", "membership_epoch")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    MIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    lsn: int
    min_epoch: int
    membership_epoch: int
    def __init__(self, page_no: _Optional[int] = ..., lsn: _Optional[int] = ..., min_epoch: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class GetPageResponse(_message.Message):
    __slots__ = ("image", "page_lsn", "scl")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    page_lsn: int
    scl: int
    def __init__(self, image: _Optional[bytes] = ..., page_lsn: _Optional[int] = ..., scl: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("reader", "read_point", "address", "role", "client_address", "read_point_hold_s")
    READER_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_HOLD_S_FIELD_NUMBER: _ClassVar[int]
    reader: str
    read_point: int
    address: str
    role: str
    client_address: str
    read_point_hold_s: int
    def __init__(self, reader: _Optional[str] = ..., read_point: _Optional[int] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., client_address: _Optional[str] = ..., read_point_hold_s: _Optional[int] = ...) -> None: ...

class SealEpochRequest(_message.Message):
    __slots__ = ("epoch", "owner", "membership_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    owner: str
    membership_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., owner: _Optional[str] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class TruncateRequest(_message.Message):
    __slots__ = ("epoch", "ranges", "truncations_version", "membership_epoch")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATIONS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    ranges: _containers.RepeatedCompositeFieldContainer[TruncationRange]
    truncations_version: int
    membership_epoch: int
    def __init__(self, epoch: _Optional[int] = ..., ranges: _Optional[_Iterable[_Union[TruncationRange, _Mapping]]] = ..., truncations_version: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class ReadPageImagesRequest(_message.Message):
    __slots__ = ("at_lsn", "from_page", "pages_max", "min_epoch", "membership_epoch")
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    FROM_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGES_MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    at_lsn: int
    from_page: int
    pages_max: int
    min_epoch: int
    membership_epoch: int
    def __init__(self, at_lsn: _Optional[int] = ..., from_page: _Optional[int] = ..., pages_max: _Optional[int] = ..., min_epoch: _Optional[int] = ..., membership_epoch: _Optional[int] = ...) -> None: ...

class PageImageEntry(_message.Message):
    __slots__ = ("page_no", "page_lsn", "image", "crc32c")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    page_lsn: int
    image: bytes
    crc32c: int
    def __init__(self, page_no: _Optional[int] = ..., page_lsn: _Optional[int] = ..., image: _Optional[bytes] = ..., crc32c: _Optional[int] = ...) -> None: ...

class ReadPageImagesResponse(_message.Message):
    __slots__ = ("pages", "next_page", "done", "page_versions_stored")
    PAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    PAGE_VERSIONS_STORED_FIELD_NUMBER: _ClassVar[int]
    pages: _containers.RepeatedCompositeFieldContainer[PageImageEntry]
    next_page: int
    done: bool
    page_versions_stored: int
    def __init__(self, pages: _Optional[_Iterable[_Union[PageImageEntry, _Mapping]]] = ..., next_page: _Optional[int] = ..., done: _Optional[bool] = ..., page_versions_stored: _Optional[int] = ...) -> None: ...

class FollowLogRequest(_message.Message):
    __slots__ = ("reader", "after_lsn", "chunk_records_max", "compress")
    READER_FIELD_NUMBER: _ClassVar[int]
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_RECORDS_MAX_FIELD_NUMBER: _ClassVar[int]
    COMPRESS_FIELD_NUMBER: _ClassVar[int]
    reader: str
    after_lsn: int
    chunk_records_max: int
    compress: bool
    def __init__(self, reader: _Optional[str] = ..., after_lsn: _Optional[int] = ..., chunk_records_max: _Optional[int] = ..., compress: _Optional[bool] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("records", "compressed", "after_lsn", "last_lsn", "vdl", "vdl_epoch", "scl", "raw_bytes")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    AFTER_LSN_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    VDL_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    records: bytes
    compressed: bool
    after_lsn: int
    last_lsn: int
    vdl: int
    vdl_epoch: int
    scl: int
    raw_bytes: int
    def __init__(self, records: _Optional[bytes] = ..., compressed: _Optional[bool] = ..., after_lsn: _Optional[int] = ..., last_lsn: _Optional[int] = ..., vdl: _Optional[int] = ..., vdl_epoch: _Optional[int] = ..., scl: _Optional[int] = ..., raw_bytes: _Optional[int] = ...) -> None: ...

class FrameHello(_message.Message):
    __slots__ = ("method", "node", "volume_id")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    method: str
    node: str
    volume_id: str
    def __init__(self, method: _Optional[str] = ..., node: _Optional[str] = ..., volume_id: _Optional[str] = ...) -> None: ...

class FrameError(_message.Message):
    __slots__ = ("error", "message")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    error: str
    message: str
    def __init__(self, error: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class WatchStateRequest(_message.Message):
    __slots__ = ("reader",)
    READER_FIELD_NUMBER: _ClassVar[int]
    reader: str
    def __init__(self, reader: _Optional[str] = ...) -> None: ...

class PageChange(_message.Message):
    __slots__ = ("page_no", "offset", "data")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    offset: int
    data: bytes
    def __init__(self, page_no: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class WritePagesRequest(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[PageChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[PageChange, _Mapping]]] = ...) -> None: ...

class WritePagesResponse(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class StreamedWrite(_message.Message):
    __slots__ = ("id", "changes")
    ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    id: int
    changes: _containers.RepeatedCompositeFieldContainer[PageChange]
    def __init__(self, id: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[PageChange, _Mapping]]] = ...) -> None: ...

class WritePagesStreamRequest(_message.Message):
    __slots__ = ("writes",)
    WRITES_FIELD_NUMBER: _ClassVar[int]
    writes: _containers.RepeatedCompositeFieldContainer[StreamedWrite]
    def __init__(self, writes: _Optional[_Iterable[_Union[StreamedWrite, _Mapping]]] = ...) -> None: ...

class WriteOutcome(_message.Message):
    __slots__ = ("id", "commit_lsn", "error_code", "error_name", "error_message", "error_fields")
    ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    commit_lsn: int
    error_code: str
    error_name: str
    error_message: str
    error_fields: str
    def __init__(self, id: _Optional[int] = ..., commit_lsn: _Optional[int] = ..., error_code: _Optional[str] = ..., error_name: _Optional[str] = ..., error_message: _Optional[str] = ..., error_fields: _Optional[str] = ...) -> None: ...

class WritePagesStreamResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[WriteOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[WriteOutcome, _Mapping]]] = ...) -> None: ...

class ReadPageRequest(_message.Message):
    __slots__ = ("page_no",)
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    def __init__(self, page_no: _Optional[int] = ...) -> None: ...

class ReadPageResponse(_message.Message):
    __slots__ = ("image", "page_lsn", "read_point")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    page_lsn: int
    read_point: int
    def __init__(self, image: _Optional[bytes] = ..., page_lsn: _Optional[int] = ..., read_point: _Optional[int] = ...) -> None: ...

class CompareAndSetRequest(_message.Message):
    __slots__ = ("page_no", "offset", "expected", "new")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    offset: int
    expected: bytes
    new: bytes
    def __init__(self, page_no: _Optional[int] = ..., offset: _Optional[int] = ..., expected: _Optional[bytes] = ..., new: _Optional[bytes] = ...) -> None: ...

class CompareAndSetResponse(_message.Message):
    __slots__ = ("applied", "found", "commit_lsn")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    found: bytes
    commit_lsn: int
    def __init__(self, applied: _Optional[bool] = ..., found: _Optional[bytes] = ..., commit_lsn: _Optional[int] = ...) -> None: ...

class StorageNodeView(_message.Message):
    __slots__ = ("name", "reachable", "scl", "epoch")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    reachable: bool
    scl: int
    epoch: int
    def __init__(self, name: _Optional[str] = ..., reachable: _Optional[bool] = ..., scl: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class WriterState(_message.Message):
    __slots__ = ("epoch", "vdl", "vcl", "next_lsn", "fenced", "recovered", "nodes", "status", "sql", "role", "membership")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    VCL_FIELD_NUMBER: _ClassVar[int]
    NEXT_LSN_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    vdl: int
    vcl: int
    next_lsn: int
    fenced: bool
    recovered: bool
    nodes: _containers.RepeatedCompositeFieldContainer[StorageNodeView]
    status: str
    sql: SqlCounters
    role: str
    membership: MembershipView
    def __init__(self, epoch: _Optional[int] = ..., vdl: _Optional[int] = ..., vcl: _Optional[int] = ..., next_lsn: _Optional[int] = ..., fenced: _Optional[bool] = ..., recovered: _Optional[bool] = ..., nodes: _Optional[_Iterable[_Union[StorageNodeView, _Mapping]]] = ..., status: _Optional[str] = ..., sql: _Optional[_Union[SqlCounters, _Mapping]] = ..., role: _Optional[str] = ..., membership: _Optional[_Union[MembershipView, _Mapping]] = ...) -> None: ...

class SqlCounters(_message.Message):
    __slots__ = ("commits", "redo_bytes", "changed_page_bytes")
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    REDO_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    commits: int
    redo_bytes: int
    changed_page_bytes: int
    def __init__(self, commits: _Optional[int] = ..., redo_bytes: _Optional[int] = ..., changed_page_bytes: _Optional[int] = ...) -> None: ...

class GetWriterStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReaderState(_message.Message):
    __slots__ = ("name", "read_point", "epoch", "nodes", "sql_pages_forwarded", "sql_pages_fetched")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SQL_PAGES_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    SQL_PAGES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    name: str
    read_point: int
    epoch: int
    nodes: _containers.RepeatedCompositeFieldContainer[StorageNodeView]
    sql_pages_forwarded: int
    sql_pages_fetched: int
    def __init__(self, name: _Optional[str] = ..., read_point: _Optional[int] = ..., epoch: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[StorageNodeView, _Mapping]]] = ..., sql_pages_forwarded: _Optional[int] = ..., sql_pages_fetched: _Optional[int] = ...) -> None: ...

class GetReaderStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SqlValue(_message.Message):
    __slots__ = ("null", "integer", "real", "text", "blob")
    NULL_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    null: bool
    integer: int
    real: float
    text: str
    blob: bytes
    def __init__(self, null: _Optional[bool] = ..., integer: _Optional[int] = ..., real: _Optional[float] = ..., text: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class SqlRow(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[SqlValue]
    def __init__(self, values: _Optional[_Iterable[_Union[SqlValue, _Mapping]]] = ...) -> None: ...

class SqlStatement(_message.Message):
    __slots__ = ("sql", "params", "param_sets")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PARAM_SETS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[SqlValue]
    param_sets: _containers.RepeatedCompositeFieldContainer[SqlRow]
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[SqlValue, _Mapping]]] = ..., param_sets: _Optional[_Iterable[_Union[SqlRow, _Mapping]]] = ...) -> None: ...

class SqlResult(_message.Message):
    __slots__ = ("columns", "rows", "rows_changed", "last_row_id")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LAST_ROW_ID_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[SqlRow]
    rows_changed: int
    last_row_id: int
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[SqlRow, _Mapping]]] = ..., rows_changed: _Optional[int] = ..., last_row_id: _Optional[int] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("statements", "session", "writer_only", "min_read_point")
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    WRITER_ONLY_FIELD_NUMBER: _ClassVar[int]
    MIN_READ_POINT_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedCompositeFieldContainer[SqlStatement]
    session: str
    writer_only: bool
    min_read_point: int
    def __init__(self, statements: _Optional[_Iterable[_Union[SqlStatement, _Mapping]]] = ..., session: _Optional[str] = ..., writer_only: _Optional[bool] = ..., min_read_point: _Optional[int] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("results", "commit_lsn", "read_point")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SqlResult]
    commit_lsn: int
    read_point: int
    def __init__(self, results: _Optional[_Iterable[_Union[SqlResult, _Mapping]]] = ..., commit_lsn: _Optional[int] = ..., read_point: _Optional[int] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("writer_only",)
    WRITER_ONLY_FIELD_NUMBER: _ClassVar[int]
    writer_only: bool
    def __init__(self, writer_only: _Optional[bool] = ...) -> None: ...

class BeginResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class EndRequest(_message.Message):
    __slots__ = ("session", "commit")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    session: str
    commit: bool
    def __init__(self, session: _Optional[str] = ..., commit: _Optional[bool] = ...) -> None: ...

class EndResponse(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class ExecuteStreamRequest(_message.Message):
    __slots__ = ("id", "request", "timeout_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    id: int
    request: ExecuteRequest
    timeout_s: float
    def __init__(self, id: _Optional[int] = ..., request: _Optional[_Union[ExecuteRequest, _Mapping]] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class ExecuteStreamResponse(_message.Message):
    __slots__ = ("id", "response", "error_code", "error_name", "error_message", "error_fields")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_NAME_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: ExecuteResponse
    error_code: str
    error_name: str
    error_message: str
    error_fields: str
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[ExecuteResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_name: _Optional[str] = ..., error_message: _Optional[str] = ..., error_fields: _Optional[str] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("epoch", "writer_name", "writer_address", "instances", "answered_by", "writer_client_address")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WRITER_NAME_FIELD_NUMBER: _ClassVar[int]
    WRITER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_BY_FIELD_NUMBER: _ClassVar[int]
    WRITER_CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    writer_name: str
    writer_address: str
    instances: _containers.RepeatedCompositeFieldContainer[InstanceView]
    answered_by: str
    writer_client_address: str
    def __init__(self, epoch: _Optional[int] = ..., writer_name: _Optional[str] = ..., writer_address: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[InstanceView, _Mapping]]] = ..., answered_by: _Optional[str] = ..., writer_client_address: _Optional[str] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("planned",)
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    planned: bool
    def __init__(self, planned: _Optional[bool] = ...) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("epoch", "vdl", "writes_paused_s")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    WRITES_PAUSED_S_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    vdl: int
    writes_paused_s: float
    def __init__(self, epoch: _Optional[int] = ..., vdl: _Optional[int] = ..., writes_paused_s: _Optional[float] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("hold_s",)
    HOLD_S_FIELD_NUMBER: _ClassVar[int]
    hold_s: float
    def __init__(self, hold_s: _Optional[float] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("vdl",)
    VDL_FIELD_NUMBER: _ClassVar[int]
    vdl: int
    def __init__(self, vdl: _Optional[int] = ...) -> None: ...
