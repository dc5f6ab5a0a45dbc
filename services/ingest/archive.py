"""The archiver worker: archives records that reached the inbound topics without passing
through ingest (storefronts producing straight to Kafka). What ingest archived carries its seal
(`shared.archive.seal`, a keyed hash of the record's bytes) and is passed over unread; any other
record is read, and one already archived is recognised by its id and digest; one id with
another body is parked as a conflict."""

from __future__ import annotations

from sqlalchemy import Connection

from shared.archive import SEAL_HEADER, archive_key, read_inbound, sealed, store
from shared.consumer import Batch, Contract, Delivery, Output, conflict_problem
from shared.events import EVENT_TYPES
from shared.topics import Topics


class EventArchiver:
    """Appends inbound records to the archive; a repeated event id is stored once."""

    name = "archiver"

    def __init__(self, topics: Topics) -> None:
        self.topics: tuple[str, ...] = topics.inbound
        # The archive's unique event id is the claim: no processed_events rows needed.
        self.contract = Contract(read=read_inbound, handles=EVENT_TYPES, route=topics.home,
                                 passes_over=self.sealed)

    @staticmethod
    def sealed(conn: Connection, delivery: Delivery) -> bool:
        """Ingest archived this very record (its seal matches its bytes)."""
        return sealed(archive_key(conn), delivery.value, delivery.header(SEAL_HEADER))

    def apply(self, conn: Connection, batch: Batch) -> list[Output]:
        if not batch.records:
            return []
        stored = store(conn, [r.event for r in batch.records])
        if stored.conflicts:
            conflicting = {id(e): known for e, known in stored.conflicts}
            for record in batch.records:
                if id(record.event) in conflicting:
                    batch.park(record, [conflict_problem(record.event.event_id,
                                                         conflicting[id(record.event)])])
        return []
