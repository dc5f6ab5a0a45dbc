"""Typed settings, read once from the environment (MEMBERFLOW_*); explicit arguments win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import AwareDatetime, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.events import TimeBounds
from shared.kafka import FETCH_MAX_WAIT_MS, SESSION_TIMEOUT_MS
from shared.topics import Topics


class Settings(BaseSettings):
    """Where the broker and database are, and how workers batch.

    Leaving `kafka` or `database_url` unset means "embedded": the Tansu broker and a PostgreSQL
    server under `data_dir` are started for you.
    """

    model_config = SettingsConfigDict(env_prefix="MEMBERFLOW_", extra="ignore")

    kafka: str | None = Field(None, description="bootstrap servers, e.g. kafka1:9092,kafka2:9092")
    database_url: SecretStr | None = Field(None, description="postgresql://user:pass@host/db")
    data_dir: Path = Path(".memberflow")
    topic_prefix: str = "memberflow."
    partitions: int = Field(4, ge=1, le=1024)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8787, ge=0, le=65535)
    batch_max_records: int = Field(5000, ge=1, le=100_000)
    session_timeout_ms: int = Field(
        SESSION_TIMEOUT_MS, ge=1000, le=300_000,
        description="a worker's consumer-group session; Tansu holds a group's first join for "
                    "half of it")
    fetch_wait_ms: int = Field(
        FETCH_MAX_WAIT_MS, ge=0, le=10_000,
        description="how long the broker may hold a worker's fetch that found nothing: on "
                    "Tansu also how late a record can reach an idle worker; shorter costs "
                    "idle CPU")
    abc_debounce_seconds: float = Field(
        5.0, ge=0, le=3600, description="recompute a shop's customer ABC at most this often")
    campaign_lateness_hours: float = Field(
        24.0, gt=0, le=720, description="events further behind the newest event of their shop "
                                       "than this are not attributed to campaigns (dead "
                                       "letters); they count everywhere else")
    max_clock_skew_seconds: float = Field(
        300.0, ge=0, le=86_400, description="events dated further ahead of the wall clock are "
                                            "refused")
    event_time_floor: AwareDatetime = Field(
        datetime(2000, 1, 1, tzinfo=UTC), description="events dated before this are refused")
    ingest_events_per_second: float = Field(
        5000.0, ge=0, description="events each ingest key may send per second, in bursts of up "
                                  "to two seconds' worth (0: no limit); over it: 429 with "
                                  "Retry-After")
    token_cache_seconds: float = Field(
        10.0, ge=0, le=300, description="ingest remembers a verified key this long: a "
                                        "revocation reaches ingest within it")
    tick_seconds: float = Field(
        60.0, ge=0, le=3600, description="`up` records the wall-clock time into the stream this "
                                         "often (0: never), so time-based rules move on when "
                                         "no shop sells")

    @property
    def lateness(self) -> timedelta:
        return timedelta(hours=self.campaign_lateness_hours)

    @property
    def bounds(self) -> TimeBounds:
        """The sanity window for event times (see `shared.events.TimeBounds`)."""
        return TimeBounds(self.event_time_floor, timedelta(seconds=self.max_clock_skew_seconds))

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def database_url_plain(self) -> str | None:
        """The URL with its secret, for the driver only; never log this."""
        return self.database_url.get_secret_value() if self.database_url else None

    def as_env(self) -> dict[str, str]:
        """These settings as the environment of a child process (`MEMBERFLOW_*`), so a worker
        started by `up` runs with exactly what `up` runs with."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[f"MEMBERFLOW_{name.upper()}"] = str(value)
        return out
