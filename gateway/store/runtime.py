"""The store as one worker runs it: the database, this worker's spool, and the shipper between."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from gateway.config.models import StoreConfig
from gateway.errors import Unavailable
from gateway.store.engine import create_engine
from gateway.store.responses import StoredResponses
from gateway.store.shipper import spool_directory
from gateway.store.shipper_process import ShipperProcess
from gateway.store.spool import SpoolWriter
from gateway.store.sql import SqlStore

log = logging.getLogger("tiergate")

CLOSE_SHIP_S = 5.0


@contextlib.contextmanager
def reachable() -> Iterator[None]:
    """A request that needs the store itself gets a 503 while the store cannot be reached."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        log.error("the decision store cannot be reached: %s", exc)
        raise Unavailable(
            "the decision store cannot be reached; try again shortly", retry_after_s=1
        ) from None


class StoreError(Exception):
    """The store cannot be used as configured (its schema is not this gateway's)."""


@dataclass
class StoreRuntime:
    config: StoreConfig
    store: SqlStore
    spool: SpoolWriter
    shipper: ShipperProcess
    responses: StoredResponses

    @classmethod
    async def open(cls, config: StoreConfig) -> StoreRuntime:
        engine = create_engine(config.url)
        store = SqlStore(engine)
        try:
            await check_schema(store, config)
        except StoreError:
            await store.close()
            raise
        except Exception as exc:  # not reachable now: the spool keeps the records until it is
            log.error(
                "the decision store cannot be reached at start-up (%s); records will wait in the spool", exc
            )
        spool = SpoolWriter(
            spool_directory(config.spool_dir, config.url), int(config.spool_max_mb * 1024 * 1024)
        )
        responses = StoredResponses(engine, config.responses_keep_days * 86400)
        return cls(config, store, spool, await ShipperProcess.start(config, spool), responses)

    async def close(self) -> None:
        """Ship what is spooled (for a few seconds at most), then stop; the rest stays spooled."""
        await self.shipper.close(CLOSE_SHIP_S)
        self.spool.close()
        await self.store.close()


def prepare(config: StoreConfig) -> None:
    """Before workers start: upgrade or check the schema once (raises StoreError when it is not
    this gateway's); a store that cannot be reached now is only logged, records wait for it."""

    async def run() -> None:
        store = SqlStore(create_engine(config.url))
        try:
            await check_schema(store, config)
        except StoreError:
            raise
        except Exception as exc:
            log.error("the decision store cannot be reached (%s); records will wait in the spool", exc)
        finally:
            await store.close()

    asyncio.run(run())


async def check_schema(store: SqlStore, config: StoreConfig) -> None:
    """Upgrade the schema (SQLite by default) or check that it is this gateway's."""
    # Alembic (about 11 MiB) is loaded only by a worker that has a store
    from gateway.store.migrate import current_revision, head_revision, upgrade

    auto = config.auto_upgrade if config.auto_upgrade is not None else config.is_sqlite
    if auto:
        await upgrade(store.engine, config.url)
        return
    found, wanted = await current_revision(store.engine), head_revision()
    if found != wanted:
        raise StoreError(
            f"the store's schema is at revision {found or 'none'}, this gateway needs {wanted}:"
            " run `tiergate db upgrade --config FILE`"
        )
