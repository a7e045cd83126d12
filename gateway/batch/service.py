"""The Batch API's parts, as the HTTP handlers find them on the gateway."""

from __future__ import annotations

from gateway.batch.files import FileKeeper
from gateway.batch.runner import BatchRunner
from gateway.batch.store import SqlBatchStore
from gateway.config.batch import BatchConfig
from gateway.http.wire import InputLimits


class Batches:
    """What the API needs: the store, the files, the runner to nudge, and the limits."""

    def __init__(
        self,
        store: SqlBatchStore,
        files: FileKeeper,
        runner: BatchRunner,
        config: BatchConfig,
        limits: InputLimits,
    ) -> None:
        self.store = store
        self.files = files
        self.runner = runner
        self.config = config
        self.limits = limits
