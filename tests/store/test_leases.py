"""The lease steps: who may take, renew, hand over or drop a session's owner and lease, decided
from the record as read (each step is then one compare-and-set)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from session_store import Lease, SessionRecord
from session_store.leases import (
    extend,
    finish_rebuild,
    new_lease,
    release,
    renewed,
    take_propagation,
    take_rebuild,
)


def record(replica: str | None = "a", lease: Lease | None = None) -> SessionRecord:
    now = datetime.now(UTC)
    return SessionRecord(
        session_id="s1",
        model="m",
        replica=replica,
        lease=lease,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(minutes=30),
        video={},
    )


def lapsed(lease: Lease) -> Lease:
    return lease.model_copy(update={"until": datetime.now(UTC) - timedelta(seconds=1)})


def test_a_rebuild_takes_a_session_only_from_the_owner_it_saw_fail():
    lease = new_lease("restoring", 60)
    taken = take_rebuild("a", lease)(record("a"))
    assert (taken.replica, taken.lease, taken.status()) == (None, lease, "restoring")
    assert take_rebuild("a", lease)(record("b")) is None  # rebuilt elsewhere meanwhile


def test_a_live_rebuild_excludes_another_but_a_lapsed_one_does_not():
    first = new_lease("restoring", 60)
    assert take_rebuild(None, new_lease("restoring", 60))(record(None, first)) is None
    second = new_lease("restoring", 60)
    assert take_rebuild(None, second)(record(None, lapsed(first))).lease == second


def test_a_propagation_lease_gives_way_to_a_rebuild_of_its_lost_replica():
    lease = new_lease("restoring", 60)
    assert take_rebuild("a", lease)(record("a", new_lease("propagating", 30))).lease == lease


def test_a_rebuild_hands_over_only_while_its_lease_is_live():
    lease = new_lease("restoring", 60)
    handed = finish_rebuild(lease, "b")(record(None, lease))
    assert (handed.replica, handed.lease) == ("b", None)
    assert finish_rebuild(lease, "b")(record(None, lapsed(lease))) is None
    assert finish_rebuild(lease, "b")(record(None, new_lease("restoring", 60))) is None


def test_a_propagation_replaces_a_stale_lease_but_not_on_a_moved_session():
    lease = new_lease("propagating", 30)
    assert take_propagation("a", lease)(record("a", new_lease("propagating", 30))).lease == lease
    assert take_propagation("a", lease)(record(None, new_lease("restoring", 60))) is None


def test_renewal_keeps_its_own_lease_even_lapsed_and_yields_to_a_newer_holder():
    lease = new_lease("propagating", 30)
    later = renewed(lease, 60)
    assert later.holder == lease.holder and later.until > lease.until
    assert extend(later, "a")(record("a", lease)).lease == later
    assert extend(later, "a")(record("a", lapsed(lease))).lease == later
    assert extend(later, "a")(record("a", new_lease("propagating", 30))) is None
    assert extend(later, "a")(record("b", lease)) is None


def test_release_drops_only_the_holders_own_lease():
    lease = new_lease("propagating", 30)
    assert release(lease)(record("a", lapsed(lease))).lease is None
    assert release(lease)(record("a", new_lease("propagating", 30))) is None
    assert release(lease)(record("a")) is None


def test_a_record_written_before_creator_key_was_named_so_still_reads():
    stored = record().model_dump(mode="json")
    stored["owner_key"] = stored.pop("creator_key") or "hash-of-key"
    assert SessionRecord.model_validate(stored).creator_key == "hash-of-key"
    assert "creator_key" in SessionRecord.model_validate(stored).model_dump()
